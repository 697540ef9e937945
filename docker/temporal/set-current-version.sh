#!/bin/sh
# One-shot (temporalio/admin-tools image): make this release's worker build the current version of
# the worker deployment, so the server routes new checkouts to it (and, as the workflows are
# AUTO_UPGRADE, moves running ones to it at their next step). Without Worker Versioning configured
# (INVSAGA_WORKER_BUILD_ID empty) there is nothing to promote and it exits 0.
#
# It waits until a worker of the build has polled: the server only knows a version once it has.
#
# Environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, INVSAGA_WORKER_DEPLOYMENT_NAME,
# INVSAGA_WORKER_BUILD_ID.
set -eu
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
DEPLOYMENT=${INVSAGA_WORKER_DEPLOYMENT_NAME:-}
BUILD_ID=${INVSAGA_WORKER_BUILD_ID:-}
if [ -z "$DEPLOYMENT" ] || [ -z "$BUILD_ID" ]; then
    echo "Worker Versioning is off (no deployment name or build id): nothing to promote"
    exit 0
fi

attempt=0
until temporal worker deployment describe-version --address "$ADDRESS" --namespace "$NAMESPACE" \
        --deployment-name "$DEPLOYMENT" --build-id "$BUILD_ID" > /dev/null 2>&1; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 120 ] || { echo "no worker of $DEPLOYMENT build $BUILD_ID has polled yet" >&2; exit 1; }
    sleep 1
done

temporal worker deployment set-current-version --address "$ADDRESS" --namespace "$NAMESPACE" \
    --deployment-name "$DEPLOYMENT" --build-id "$BUILD_ID" --yes
echo "build $BUILD_ID is the current version of worker deployment $DEPLOYMENT"
