#!/bin/sh
# One-shot (temporalio/admin-tools image, or anywhere the `temporal` CLI is on PATH): create the
# namespace when it is missing, then register the search attributes the checkout workflow sets.
#
#   setup-namespace.sh NAME=TYPE...     e.g. OrderId=Keyword CheckoutAmount=Double
#
# docker-compose.yml passes exactly invsaga/temporal/search_attributes.py's REGISTRATION (a test checks
# that). Safe to re-run: an attribute that exists with the same type is left alone; one that exists
# with another type fails loudly, since the workflows could not set it.
#
# Environment: TEMPORAL_ADDRESS (host:port), TEMPORAL_NAMESPACE, TEMPORAL_NAMESPACE_RETENTION.
set -eu
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
RETENTION=${TEMPORAL_NAMESPACE_RETENTION:-72h}
[ "$#" -gt 0 ] || { echo "usage: $0 NAME=TYPE..." >&2; exit 2; }

attempt=0
until temporal operator cluster health --address "$ADDRESS" > /dev/null 2>&1; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 90 ] || { echo "Temporal at $ADDRESS never became healthy" >&2; exit 1; }
    sleep 1
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" > /dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
    echo "created namespace $NAMESPACE (retention $RETENTION)"
fi

# A new namespace reaches every frontend's cache a few seconds after it is created.
attempt=0
until temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE" > /dev/null 2>&1; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "namespace $NAMESPACE never became usable" >&2; exit 1; }
    sleep 1
done

for pair in "$@"; do
    name=${pair%%=*}
    kind=${pair#*=}
    if [ -z "$name" ] || [ -z "$kind" ] || [ "$name" = "$pair" ]; then
        echo "not NAME=TYPE: $pair" >&2
        exit 2
    fi
    temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
        --name "$name" --type "$kind"
    echo "search attribute $name ($kind) is registered"
done
