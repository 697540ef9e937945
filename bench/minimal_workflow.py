"""The smallest workflow there is: it completes in its first workflow task. B3 runs it on the same
Temporal server in the same run, as the ceiling any workflow can reach on this machine."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="BenchMinimal")
class MinimalWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> str:
        return order_id
