"""Each provider's attendees as its API sends them, through the pure mappers: answers normalized to one vocabulary,
the organizer flagged, repeats and address-less people dropped, a deleted event's attendees deleted with it."""

from datetime import UTC, datetime

from integrations_pipeline.clients import google, microsoft, salesforce, zoho
from integrations_pipeline.records import EventRecord

START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def event(deleted: bool = False) -> EventRecord:
    return EventRecord(
        connection_id="c",
        source_id="e1",
        title=None,
        organizer_email=None,
        start_at=START,
        end_at=None,
        is_all_day=False,
        location=None,
        created_at=None,
        modified_at=None,
        is_deleted=deleted,
    )


def answers(records: list) -> list[tuple[str, str, bool]]:
    return [(record["email"], record["response_status"], record["is_organizer"]) for record in records]


def test_google_attendees_keep_calendars_answers_and_organizer() -> None:
    raw = google.CalendarEvent.model_validate(
        {
            "id": "e1",
            "attendees": [
                {"email": "Org@X.example", "organizer": True, "responseStatus": "accepted"},
                {"email": "a@x.example", "displayName": "A", "responseStatus": "needsAction"},
                {"email": "org@x.example", "responseStatus": "declined"},  # the same address again
                {"displayName": "a room without an address", "responseStatus": "accepted"},
                {"email": "b@x.example", "responseStatus": "somethingNew"},
            ],
        }
    )
    records = google.to_attendees(raw, event())
    assert answers(records) == [
        ("org@x.example", "accepted", True),
        ("a@x.example", "needs_action", False),
        ("b@x.example", "unknown", False),
    ]
    assert {(r["event_source_id"], r["start_at"], r["is_deleted"]) for r in records} == {("e1", START, False)}


def test_graph_attendees_add_the_organizer_graph_keeps_apart() -> None:
    raw = microsoft.GraphEvent.model_validate(
        {
            "id": "e1",
            "organizer": {"emailAddress": {"name": "Org", "address": "org@x.example"}},
            "attendees": [
                {
                    "status": {"response": "tentativelyAccepted"},
                    "emailAddress": {"name": "A", "address": "a@x.example"},
                },
                {"status": {"response": "notResponded"}, "emailAddress": {"address": "b@x.example"}},
            ],
        }
    )
    assert answers(microsoft.to_attendees(raw, event(deleted=True))) == [
        ("org@x.example", "accepted", True),
        ("a@x.example", "tentative", False),
        ("b@x.example", "needs_action", False),
    ]
    assert all(record["is_deleted"] for record in microsoft.to_attendees(raw, event(deleted=True)))


def test_zoho_participants_by_email_or_address() -> None:
    raw = zoho.ZohoEvent.model_validate(
        {
            "id": "e1",
            "Start_DateTime": "2026-03-02T09:00:00+00:00",
            "Owner": {"id": "1", "name": "Org", "email": "org@x.example"},
            "Participants": [
                {"Email": "a@x.example", "name": "A", "type": "contact", "participant": "42", "status": "declined"},
                {"type": "email", "participant": "b@x.example", "status": "not_known"},
            ],
        }
    )
    assert answers(zoho.to_attendees(raw, event())) == [
        ("org@x.example", "accepted", True),
        ("a@x.example", "declined", False),
        ("b@x.example", "unknown", False),
    ]


def test_salesforce_relations_answer_through_their_status_and_accounts_are_not_people() -> None:
    raw = salesforce.SalesforceEvent.model_validate(
        {
            "Id": "e1",
            "SystemModstamp": "2026-03-01T00:00:00.000+0000",
            "Owner": {"Email": "org@x.example"},
            "Who": {"Email": "who@x.example", "FirstName": "Wh", "LastName": "O"},
        }
    )
    relations = [
        salesforce.SalesforceEventRelation.model_validate(relation)
        for relation in (
            {
                "EventId": "e1",
                "Relation": {"Name": "A", "Email": "a@x.example"},
                "Status": "Declined",
                "IsInvitee": True,
            },
            {"EventId": "e1", "Relation": {"Name": "Acme", "Email": None}, "Status": "New", "IsWhat": True},
            {
                "EventId": "e1",
                "Relation": {"Name": "Wh O", "Email": "who@x.example"},
                "Status": "New",
                "IsParent": True,
            },
            {
                "EventId": "e1",
                "Relation": {"Name": "Org", "Email": "org@x.example"},
                "Status": "New",
                "IsInvitee": True,
            },
            {"EventId": "e1", "Relation": {"Name": "B", "Email": "b@x.example"}, "Status": "New", "IsInvitee": True},
        )
    ]
    assert answers(salesforce.to_attendees(raw, event(), relations)) == [
        ("org@x.example", "accepted", True),
        ("a@x.example", "declined", False),
        ("who@x.example", "unknown", False),
        ("b@x.example", "needs_action", False),
    ]
