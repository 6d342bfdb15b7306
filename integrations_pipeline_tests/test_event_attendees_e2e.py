"""Salesforce invitations (EventRelation) and HubSpot meeting contacts (associations) end to end: connected through
the gateway, synced by Dagster, they land in `<provider>.event_attendees` and `unified.event_attendees` with email,
name, answer and organizer flag; someone uninvited at the provider is flagged deleted by the next (incremental) sync;
and materializing the tenant's unified events rebuilds its unified attendees."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import duckdb
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import CONNECTION, DAY, TENANT, TENANTS, connection_partitions
from integrations_pipeline_tests.conftest import Stack, changed_a_second_ago

TENANT_ID = "acme"
START = datetime(2026, 7, 14, 15, tzinfo=UTC)

Attendee = tuple[str, str | None, str, bool, bool]  # email, name, response, organizer, deleted


def salesforce_event(emulator: Any) -> tuple[str, dict[str, Attendee], Callable[[], None]]:
    """An event owned by the admin, a contact who accepted, a user who declined, an account (not a person)."""
    event_id = emulator.create_event(
        {"Subject": "Attendees", "StartDateTime": START, "EndDateTime": START + timedelta(hours=1)}
    )
    contact = emulator.contact_records()[0]
    user = emulator.user_records()[1]
    admin = emulator.user_records()[0]
    emulator.add_event_relation({"EventId": event_id, "RelationId": contact["Id"], "Status": "Accepted"})
    declined = emulator.add_event_relation({"EventId": event_id, "RelationId": user["Id"], "Status": "Declined"})
    account_id = next(r["RelationId"] for r in emulator.event_relation_records() if r["IsWhat"])
    emulator.add_event_relation({"EventId": event_id, "RelationId": account_id, "IsWhat": True})
    people = {
        "admin": (admin["Email"], None, "accepted", True, False),
        "contact": (contact["Email"], f"{contact['FirstName']} {contact['LastName']}", "accepted", False, False),
        "user": (user["Email"], f"{user['FirstName']} {user['LastName']}", "declined", False, False),
    }
    return event_id, people, lambda: changed_a_second_ago(emulator, lambda: emulator.delete_event_relation(declined))


def hubspot_meeting(emulator: Any) -> tuple[str, dict[str, Attendee], Callable[[], None]]:
    """A meeting hosted by one owner, attended by another and by two contacts."""
    host, guest = emulator.user_records()[:2]
    meeting_id = emulator.create_meeting(
        {
            "hs_meeting_title": "Attendees",
            "hs_meeting_start_time": START.isoformat(),
            "hs_meeting_end_time": (START + timedelta(hours=1)).isoformat(),
            "hubspot_owner_id": host["id"],
            "hs_attendee_owner_ids": guest["id"],
        }
    )
    first, second = (record for record in emulator.contact_records()[:2])
    for contact in (first, second):
        emulator.associate_meeting_contact(meeting_id, contact["id"])

    def person(properties: dict[str, Any]) -> Attendee:
        return (properties["email"], f"{properties['firstname']} {properties['lastname']}", "unknown", False, False)

    people = {
        "host": (host["email"], None, "accepted", True, False),
        "guest": (guest["email"], None, "unknown", False, False),
        "first": person(first["properties"]),
        "second": person(second["properties"]),
    }
    return meeting_id, people, lambda: emulator.dissociate_meeting_contact(meeting_id, second["id"])


SCENARIOS = {"salesforce": (salesforce_event, "user"), "hubspot": (hubspot_meeting, "second")}


def attendees(stack: Stack, table: str, event_id: str) -> set[Attendee]:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        rows = connection.execute(
            f"SELECT email, name, response_status, is_organizer, is_deleted FROM {table} WHERE event_source_id = ?",
            [event_id],
        ).fetchall()
    return set(rows)


def run(
    definitions: dg.Definitions, job: str, key: dg.MultiPartitionKey, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    result = definitions.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance)
    assert result.success
    return result


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("provider", sorted(SCENARIOS))
def test_invitees_land_with_their_answers_and_an_uninvited_one_is_flagged_deleted(stack: Stack, provider: str) -> None:
    make_event, uninvited = SCENARIOS[provider]
    event_id, people, uninvite = make_event(stack.emulators[provider])
    definitions = build_definitions()
    connection_id = stack.connect(TENANT_ID, provider)
    day = START.date().isoformat()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(connection_partitions(provider).name, [connection_id])
        instance.add_dynamic_partitions(TENANTS.name, [TENANT_ID])
        events_day = dg.MultiPartitionKey({CONNECTION: connection_id, DAY: day})
        run(definitions, f"{provider}_events_sync", events_day, instance)
        for table in (f"{provider}.event_attendees", "unified.event_attendees"):
            assert attendees(stack, table, event_id) == set(people.values()), table

        uninvite()
        again = run(definitions, f"{provider}_events_sync", events_day, instance)
        metadata = again.asset_materializations_for_node(f"{provider}_events")[0].metadata
        assert metadata["sync_mode"].value == "incremental"  # the uninvitation changed the event
        email, name, response, organizer, _ = people[uninvited]
        expected = set(people.values()) - {people[uninvited]} | {(email, name, response, organizer, True)}
        for table in (f"{provider}.event_attendees", "unified.event_attendees"):
            assert attendees(stack, table, event_id) == expected, table

        with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
            connection.execute("DELETE FROM unified.event_attendees")
        run(definitions, "unified_events_sync", dg.MultiPartitionKey({TENANT: TENANT_ID, DAY: day}), instance)
        assert attendees(stack, "unified.event_attendees", event_id) == expected
