"""The sandbox payment provider: a real HTTP service with its own database that behaves like a PSP
(declines, flaky and slow answers, late charges), so the saga meets real idempotency and timeouts."""
