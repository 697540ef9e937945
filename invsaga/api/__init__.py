"""The HTTP API: stock reads, checkouts and stock administration over FastAPI (``invsaga.api.app``).

``invsaga api`` serves it (host, port and worker processes from ``INVSAGA_API_HOST``,
``INVSAGA_API_PORT``, ``INVSAGA_API_WORKERS``); ``invsaga dev`` starts it with the local stack. The
interactive documentation is at ``/docs``, with an example for every request and answer, and the schema
at ``/openapi.json``. ``invsaga.api.codec_server`` is a second, separate app (``invsaga codec-server``):
the codec the Temporal Web UI and CLI decrypt payloads through, for admin keys only.

Routes (scope in brackets)
--------------------------

- ``GET /v1/stock/{sku}`` [checkout or admin]: per location and in total (on_hand, reserved, available,
  version) with an ``ETag``; 304 for a matching ``If-None-Match``; 404 ``unknown-sku``.
- ``GET /v1/stock?sku=A&sku=B`` [checkout or admin]: up to 100 SKUs as ``items`` (shards read
  concurrently) and ``unknown``.
- ``POST /v1/checkouts`` [checkout]: needs ``Idempotency-Key``. 202 stock held, with ``Location``;
  409 ``out-of-stock`` with ``shortages``; 422 ``invalid-input``.
- ``GET /v1/checkouts/{order_id}`` [checkout]: the live state, then (``terminal``) the final result.
- ``POST /v1/checkouts/{order_id}/cancel`` [checkout]: 202 accepted; 409 ``too-late-to-cancel``.
- ``PUT /v1/stock/{sku}/{location}`` [admin]: ``If-Match: "<version>"`` required (428 without it,
  412 ``version-conflict`` when stale, ``"0"`` creates the location); 409 ``below-reserved``.
- ``POST /v1/stock/{sku}/{location}/receipts`` [admin]: adds units; needs ``Idempotency-Key``.
- ``POST /v1/stock/import`` [admin]: a streamed ``text/csv`` body up to 1 GiB; 200 reports rows read,
  imported, unchanged and ``rejected`` (each with its line); 422 lists every malformed line.
- ``GET /healthz``, ``GET /readyz`` (503 ``unavailable`` naming what is ``down``), ``GET /metrics``:
  no key.

Keys and scopes
---------------

``Authorization: Bearer <key>``. ``INVSAGA_API_KEYS`` lists ``SCOPE:SHA256HEX`` entries
(``invsaga api-key new --scope checkout`` prints a key and its entry). ``checkout`` is for services,
``admin`` for operators; apart from reading stock they are disjoint on purpose, and a key listed under
both scopes has both (see ``invsaga.api.auth``). No key or an unknown key: 401; the wrong scope: 403.

Errors
------

Every error is ``application/problem+json`` (RFC 9457) with a stable ``type``,
``urn:inventory-saga:problem:<code>``, mapped once from the domain error hierarchy in
``invsaga.api.problems``. Bodies are limited to 1 MiB (the CSV import to 1 GiB): 413 past that, 422
when malformed.

Idempotency
-----------

Keys belong to the API key that used them and are kept 24 hours in the core database
(``invsaga.api.idempotency``): the same key and body replay the first answer
(``Idempotent-Replayed: true``), the same key with another body is 422 ``idempotency-key-reused``, and
concurrent duplicates start one checkout and get one answer.
"""
