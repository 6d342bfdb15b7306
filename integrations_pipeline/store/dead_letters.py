"""Replaying dead letters by id or all at once: the one rule the CLI and the Dagster job share."""

from __future__ import annotations

from collections.abc import Sequence

from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline.store.repository import InvalidState


def replay_dead_letters(inbox: WebhookInbox, ids: Sequence[int], *, replay_all: bool, actor: str) -> int:
    """Put the named (or every unreplayed) dead letter back in the inbox; audited by the store. Refuses the whole
    request, replaying nothing, when it names no letter, names letters and all, or names one that is not waiting."""
    if replay_all == bool(ids):
        raise InvalidState("name the dead letters to replay by id, or replay them all, not both and not neither")
    if ids:
        waiting = {letter.id for letter in inbox.dead_letters()}
        unknown = sorted(set(ids) - waiting)
        if unknown:
            raise InvalidState(f"no unreplayed dead letter with id {', '.join(map(str, unknown))}")
    return inbox.replay(None if replay_all else sorted(set(ids)), actor=actor)
