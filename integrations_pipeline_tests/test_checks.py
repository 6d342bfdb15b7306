"""The partition check: one evaluation per partition, decided on that partition, saying what failed."""

import dagster as dg
import pandas as pd

from integrations_pipeline.assets.entities import (
    PARTITION_CHECK,
    Fetched,
    PartitionScope,
    Synced,
    build_entity_asset,
    check_evaluation,
)
from integrations_pipeline.clients.http import CallStats
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.warehouse import PartitionSummary, WriteCounts

CONTACTS = next(spec for spec in ENTITIES if spec.asset_name == "hubspot_contacts")
ASSET = dg.AssetKey("hubspot_contacts")


def synced(duplicate_keys: int, missing: dict[str, int]) -> Synced:
    summary = PartitionSummary(
        row_count=3,
        column_types={"connection_id": "VARCHAR", "source_id": "VARCHAR"},
        preview=pd.DataFrame(),
        duplicate_keys=duplicate_keys,
        duplicate_examples=["7"] * duplicate_keys,
        missing_by_column=missing,
    )
    fetched = Fetched("full", 3, None, frozenset())
    scope = PartitionScope.of(CONTACTS, "hubspot-acme")
    return Synced(scope, "acme", fetched, WriteCounts(inserted=3), summary, CallStats(), {})


def test_a_sound_partition_passes_on_its_own_partition() -> None:
    evaluation = check_evaluation(CONTACTS, ASSET, synced(0, {"source_id": 0, "is_deleted": 0}))
    assert (evaluation.check_name, evaluation.partition, evaluation.passed) == (PARTITION_CHECK, "hubspot-acme", True)
    assert evaluation.description is None


def test_a_failing_partition_says_which_rule_failed() -> None:
    evaluation = check_evaluation(CONTACTS, ASSET, synced(1, {"source_id": 0, "is_deleted": 2}))
    assert not evaluation.passed and evaluation.partition == "hubspot-acme"
    assert evaluation.description == "1 duplicate keys; nulls in is_deleted"
    assert evaluation.metadata["duplicate_keys"].value == 1
    assert evaluation.metadata["missing_by_column"].value == {"source_id": 0, "is_deleted": 2}


def test_each_entity_asset_has_one_check_naming_both_rules() -> None:
    (spec,) = build_entity_asset(CONTACTS).check_specs
    assert spec.name == PARTITION_CHECK
    assert spec.description is not None and "unique" in spec.description and "is_deleted" in spec.description
