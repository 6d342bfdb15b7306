"""Field mappings: the pure rules, and the gateway endpoints that validate, merge, save and preview them."""

import httpx
import pandas as pd
import pytest

from integrations_pipeline.gateway.mappings import known_fields, reserved_columns
from integrations_pipeline.mapping import (
    FieldRule,
    MappingUpdate,
    ProviderMapping,
    Transform,
    apply_rules,
    merge,
    validate_update,
)
from integrations_pipeline_tests.conftest import Stack


def problems(update: dict) -> dict[str, str]:
    return validate_update(MappingUpdate.model_validate(update), known_fields("hubspot"), reserved_columns(), "hubspot")


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
