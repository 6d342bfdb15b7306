"""A code location for the dev stack's stop test: one job whose step blocks until its run is terminated, so stopping
`make dev` can be watched stopping an in-flight run and cancelling a queued one."""

import threading

import dagster as dg


@dg.op
def block_until_terminated(context: dg.OpExecutionContext) -> None:
    context.log.info("blocking until terminated")
    threading.Event().wait()  # the termination's interrupt ends the wait


@dg.job(executor_def=dg.in_process_executor)
def block_forever() -> None:
    block_until_terminated()


defs = dg.Definitions(jobs=[block_forever])
