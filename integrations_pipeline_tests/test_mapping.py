"""Field mappings: the pure rules, and the gateway endpoints that validate, merge, save and preview them."""

from datetime import UTC, date, datetime

import httpx
import pandas as pd
import pytest

from integrations_pipeline.clients.catalog import known_fields
from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.gateway.mappings import reserved_columns
from integrations_pipeline.mapping import (
    FieldRule,
    MappingUpdate,
    PlannedRule,
    ProviderMapping,
    SourceFields,
    Transform,
    ValueType,
    apply_rules,
    apply_to_record,
    merge,
    plan,
    target_types,
    validate_update,
)
from integrations_pipeline_tests.conftest import Stack

CATALOG = {
    info.name: info
    for info in (
        FieldInfo("contacts", "lead_score", "Lead score", FieldType.NUMBER, "number", True, "properties.lead_score"),
        FieldInfo("contacts", "is_partner", "Partner", FieldType.BOOLEAN, "bool", True, "properties.is_partner"),
        FieldInfo("contacts", "tags", "Tags", FieldType.MULTI_ENUM, "enumeration", True, "properties.tags"),
        FieldInfo("contacts", "renewal", "Renewal", FieldType.DATE, "date", True, "properties.renewal"),
    )
}
CONTACTS = SourceFields(
    columns={"email": ValueType.STRING, "created_at": ValueType.TIMESTAMP}, catalog=CATALOG, removed=frozenset({"old"})
)


def sources(catalog: bool = False) -> dict[str, SourceFields]:
    if catalog:
        return {"contacts": CONTACTS}
    return {
        entity: SourceFields(columns=dict.fromkeys(names, ValueType.STRING))
        for entity, names in known_fields("hubspot").items()
    }


def problems(update: dict, catalog: bool = False) -> dict[str, str]:
    return validate_update(MappingUpdate.model_validate(update), sources(catalog), reserved_columns(), "hubspot")


def test_valid_rules_pass_and_bad_ones_name_their_field() -> None:
    assert problems({"contacts": {"crm_email": {"source": "email", "transform": "lowercase"}}}) == {}
    found = problems(
        {
            "contacts": {
                "1bad": {"source": "email"},
                "ok_name": {"source": "no_such_field"},
                "email": {"source": "email"},
                "x" * 64: {"source": "email"},
                "sql": {"source": "email; DROP TABLE x"},
            }
        }
    )
    assert set(found) == {
        "contacts.1bad",
        "contacts.ok_name.source",
        "contacts.email",
        "contacts." + "x" * 64,
        "contacts.sql.source",
    }
    assert "known:" in found["contacts.ok_name.source"] and "first_name" in found["contacts.ok_name.source"]
    assert "standard column" in found["contacts.email"]


def test_unknown_transforms_and_extra_keys_are_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="transform"):
        MappingUpdate.model_validate({"contacts": {"a": {"source": "email", "transform": "reverse"}}})
    with pytest.raises(ValueError, match="extra"):
        MappingUpdate.model_validate({"contacts": {"a": {"source": "email", "sql": "1"}}})


def test_merge_sets_replaces_and_removes() -> None:
    existing = ProviderMapping(contacts={"a": FieldRule(source="email"), "b": FieldRule(source="phone")})
    update = MappingUpdate(
        contacts={"a": FieldRule(source="company", transform=Transform.UPPERCASE), "b": None},
        users={"u": FieldRule(source="email")},
    )
    merged = merge(existing, update)
    assert merged.contacts == {"a": FieldRule(source="company", transform=Transform.UPPERCASE)}
    assert merged.users == {"u": FieldRule(source="email")}
    assert existing.contacts["b"].source == "phone"  # merging never mutates the stored mapping


def test_transforms_apply_to_values_and_keep_nulls() -> None:
    frame = pd.DataFrame({"email": [" Ann@X.io ", None], "company": ["acme", "Beta"]})
    rules = {
        "lower": FieldRule(source="email", transform=Transform.LOWERCASE),
        "trimmed": FieldRule(source="email", transform=Transform.TRIM),
        "upper": FieldRule(source="company", transform=Transform.UPPERCASE),
        "same": FieldRule(source="company"),
    }
    result = apply_rules(frame, rules)
    assert result["lower"].tolist() == [" ann@x.io ", None]
    assert result["trimmed"].tolist() == ["Ann@X.io", None]
    assert result["upper"].tolist() == ["ACME", "BETA"]
    assert result["same"].tolist() == ["acme", "Beta"]
    assert list(result.columns) == ["email", "company", "lower", "same", "trimmed", "upper"]


def test_catalog_fields_are_checked_by_name_and_by_cast() -> None:
    found = problems(
        {
            "contacts": {
                "score": {"source": "lead_scor", "transform": "to_number"},
                "partner_score": {"source": "is_partner", "transform": "to_number"},
                "tag_count": {"source": "tags", "transform": "to_number"},
                "gone": {"source": "old"},
                "bad_default": {"source": "lead_score", "transform": "to_number", "default": "n/a"},
                "bad_path": {"source": "raw..x"},
            }
        },
        catalog=True,
    )
    assert (
        found["contacts.score.source"] == "'lead_scor' is not a field of hubspot contacts; did you mean 'lead_score'?"
    )
    assert found["contacts.partner_score.source"].startswith("to_number cannot read 'is_partner', a boolean field")
    assert "to_bool" in found["contacts.partner_score.source"]
    assert "multi_enum" in found["contacts.tag_count.source"]
    assert "removed" in found["contacts.gone.source"]
    assert "'n/a'" in found["contacts.bad_default.source"] and "contacts.bad_path.source" in found
    assert (
        problems(
            {
                "contacts": {
                    "score": {"source": "lead_score", "transform": "to_number", "default": 0},
                    "partner": {"source": "is_partner", "transform": "to_bool"},
                    "first_touch": {"source": "raw.properties.first_touch", "transform": "to_timestamp"},
                    "mail": {"source": "email", "transform": "lowercase"},
                }
            },
            catalog=True,
        )
        == {}
    )


def test_mapped_values_are_typed_and_missing_ones_take_the_default() -> None:
    rules = {
        "score": FieldRule(source="lead_score", transform=Transform.TO_NUMBER, default=0),
        "partner": FieldRule(source="is_partner", transform=Transform.TO_BOOL),
        "renewal": FieldRule(source="renewal", transform=Transform.TO_DATE),
        "first_touch": FieldRule(source="raw.properties.first_touch", transform=Transform.TO_TIMESTAMP),
        "second_email": FieldRule(source="raw.emails.1"),
        "mail": FieldRule(source="email", transform=Transform.UPPERCASE),
    }
    record = {
        "email": "a@x.io",
        "raw": {
            "properties": {
                "lead_score": "42.5",
                "is_partner": "true",
                "renewal": "2027-01-31",
                "first_touch": "1700000000000",
            },
            "emails": ["a@x.io", "b@x.io"],
        },
    }
    assert apply_to_record(record, rules, CONTACTS) == {
        "first_touch": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        "mail": "A@X.IO",
        "partner": True,
        "renewal": date(2027, 1, 31),
        "score": 42.5,
        "second_email": "b@x.io",
    }
    blank = apply_to_record({"email": None, "raw": '{"properties": {"lead_score": "not a number"}}'}, rules, CONTACTS)
    assert blank == dict.fromkeys(["first_touch", "mail", "partner", "renewal", "second_email"], None) | {"score": 0.0}
    assert target_types(rules, CONTACTS) == {
        "first_touch": ValueType.TIMESTAMP,
        "mail": ValueType.STRING,
        "partner": ValueType.BOOLEAN,
        "renewal": ValueType.DATE,
        "score": ValueType.NUMBER,
        "second_email": ValueType.JSON,
    }
    planned = {rule.target: rule for rule in plan(rules, CONTACTS)}
    assert planned["score"] == PlannedRule(
        "score", None, ("properties", "lead_score"), Transform.TO_NUMBER, 0.0, ValueType.NUMBER
    )
    assert planned["mail"].column == "email" and planned["second_email"].raw_path == ("emails", "1")
    frame = apply_rules(pd.DataFrame([record, {"email": "c@x.io", "raw": None}]), rules, CONTACTS)
    assert frame["score"].tolist() == [42.5, 0.0] and frame["partner"].tolist() == [True, None]


def test_gateway_mapping_endpoints(stack: Stack) -> None:
    with stack.api() as api:
        assert api.get("/tenants/acme/mappings/hubspot").json()["mapping"]["contacts"] == {}
        saved = api.put(
            "/tenants/acme/mappings/hubspot",
            json={"contacts": {"crm_company": {"source": "company", "transform": "uppercase"}}},
        )
        assert saved.status_code == 200
        merged = api.put("/tenants/acme/mappings/hubspot", json={"contacts": {"crm_mail": {"source": "email"}}})
        assert set(merged.json()["mapping"]["contacts"]) == {"crm_company", "crm_mail"}

        refused = api.put(
            "/tenants/acme/mappings/hubspot", json={"contacts": {"ok": {"source": "nope"}, "crm_mail": None}}
        )
        assert refused.status_code == 422 and refused.json()["error"] == "invalid_mapping"
        assert set(refused.json()["fields"]) == {"contacts.ok.source"}
        after = api.get("/tenants/acme/mappings/hubspot").json()["mapping"]["contacts"]
        assert set(after) == {"crm_company", "crm_mail"}  # nothing of a refused update was saved

        preview = api.post(
            "/tenants/acme/mappings/hubspot/preview",
            json={
                "changes": {"contacts": {"crm_mail": None}},
                "samples": {"contacts": [{"company": "Acme", "email": "a@x.io"}]},
            },
        )
        assert preview.status_code == 200
        assert preview.json()["preview"]["contacts"] == [{"company": "Acme", "email": "a@x.io", "crm_company": "ACME"}]
        synthetic = api.post("/tenants/acme/mappings/hubspot/preview", json={}).json()
        assert synthetic["preview"]["contacts"][0]["crm_company"] == " SAMPLE COMPANY "
        lacking = api.post("/tenants/acme/mappings/hubspot/preview", json={"samples": {"contacts": [{"email": "x"}]}})
        assert lacking.status_code == 422 and lacking.json()["error"] == "invalid_samples"

        assert api.get("/tenants/acme/mappings/myspace").status_code == 404
        assert api.get("/tenants/bad%20tenant/mappings/hubspot").status_code == 404
        assert api.put("/tenants/acme/mappings/hubspot", content=b"[").status_code == 422
    assert httpx.get(f"{stack.gateway_url}/tenants/acme/mappings/hubspot").status_code == 401
    changes = [entry for entry in stack.store.audit_entries() if entry.action == "mapping.changed"]
    assert len(changes) == 2 and changes[0].tenant == "acme"
