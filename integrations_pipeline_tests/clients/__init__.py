import json
from collections.abc import Iterable
from typing import Any


class RawOf:
    """Equals a record's `raw` column when it is a JSON object of fields the provider holds for the record, `must`
    among them (values are re-serialized: a datetime's text may differ from the provider's, so keys are compared;
    the connector requests a subset of the fields, so the raw record may hold fewer than the emulator's truth)."""

    def __init__(self, sent: Iterable[str], must: Iterable[str] = ()) -> None:
        self.keys, self.must = {*sent, "attributes"}, set(must)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str) or not isinstance(parsed := json.loads(other), dict):
            return False
        return bool(parsed) and self.must <= set(parsed) <= self.keys

    def __repr__(self) -> str:
        return f"RawOf({sorted(self.keys)})"

    __hash__: Any = None


# (event, email, name, response, organizer) of each attendee the pages carry
AttendeeRow = tuple[str, str, str | None, str, bool]


def attendees_of(pages: Iterable[Any]) -> set[AttendeeRow]:
    return {
        (a["event_source_id"], a["email"], a["name"], a["response_status"], a["is_organizer"])
        for page in pages
        for a in page.attendees
    }
