import base64

import pytest

from integrations_pipeline.crypto import (
    DecryptionError,
    Keyring,
    KeyringError,
    generate_key_entry,
    key_fingerprint,
    key_id_of,
)


def test_round_trip_under_the_primary_key() -> None:
    keyring = Keyring.from_spec(generate_key_entry("new") + "," + generate_key_entry("old"))
    ciphertext = keyring.encrypt("secret-token", associated_data="connection:a:access_token")
    assert key_id_of(ciphertext) == "new"
    assert "secret-token" not in ciphertext
    assert keyring.decrypt(ciphertext, associated_data="connection:a:access_token") == "secret-token"


def test_nonces_are_random() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    assert keyring.encrypt("same", associated_data="x") != keyring.encrypt("same", associated_data="x")


def test_a_ciphertext_copied_to_another_row_fails() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    ciphertext = keyring.encrypt("token", associated_data="connection:a:refresh_token")
    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(ciphertext, associated_data="connection:b:refresh_token")
    with pytest.raises(DecryptionError):
        keyring.decrypt(ciphertext, associated_data="connection:a:access_token")


def test_wrong_or_missing_key_fails_closed() -> None:
    ciphertext = Keyring.from_spec(generate_key_entry("k")).encrypt("token", associated_data="x")
    with pytest.raises(DecryptionError, match="failed authentication"):
        Keyring.from_spec(generate_key_entry("k")).decrypt(ciphertext, associated_data="x")
    with pytest.raises(DecryptionError, match="not in the keyring"):
        Keyring.from_spec(generate_key_entry("other")).decrypt(ciphertext, associated_data="x")


def test_tampering_is_detected() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    ciphertext = keyring.encrypt("token", associated_data="x")
    flipped = ciphertext[:-2] + ("A" if ciphertext[-2] != "A" else "B") + ciphertext[-1]
    with pytest.raises(DecryptionError):
        keyring.decrypt(flipped, associated_data="x")
    with pytest.raises(DecryptionError, match="not a ciphertext"):
        keyring.decrypt("plaintext-token", associated_data="x")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no keys given"),
        ("nokey", "key_id:base64key"),
        ("k:c2hvcnQ=", "must be 32 bytes"),
        ("k:" + "A" * 43 + ",k:" + "B" * 43, "appears twice"),
        ("bad id:" + "A" * 43, "key_id:base64key"),
    ],
)
def test_unusable_specs_are_refused_without_echoing_key_material(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as refused:
        Keyring.from_spec(spec)
    assert "A" * 20 not in str(refused.value)


def test_an_unnamed_key_is_named_by_its_fingerprint_and_a_forged_name_is_refused() -> None:
    """Generating a key again (say `.env` was deleted) can never reuse an id stored ciphertexts already name."""
    first, second = generate_key_entry(), generate_key_entry()
    first_id, first_key = first.split(":")
    assert first_id == "k" + key_fingerprint(base64.urlsafe_b64decode(first_key))
    assert first_id != second.split(":")[0] and len(first_id) == 11
    assert Keyring.from_spec(first).primary_key_id == first_id
    with pytest.raises(KeyringError, match=f"key id {first_id!r} names another key") as refused:
        Keyring.from_spec(f"{first_id}:{second.split(':')[1]}")
    assert second.split(":")[1] not in str(refused.value)


def test_macs_are_per_key_and_purpose_and_report_a_missing_key() -> None:
    old, new = generate_key_entry("old"), generate_key_entry("new")
    before = Keyring.from_spec(old)
    key_id, mac = before.mac("entry-hash", purpose="audit")
    assert key_id == "old" and len(mac) == 64
    rotated = Keyring.from_spec(f"{new},{old}")
    assert rotated.verify_mac("entry-hash", mac, key_id="old", purpose="audit") is True
    assert rotated.verify_mac("entry-hash", mac, key_id="old", purpose="other") is False
    assert rotated.verify_mac("edited", mac, key_id="old", purpose="audit") is False
    assert rotated.mac("entry-hash", purpose="audit") != ("old", mac)
    assert Keyring.from_spec(new).verify_mac("entry-hash", mac, key_id="old", purpose="audit") is None
    # The same id with other material (a key generated again under its old name) does not verify.
    assert (
        Keyring.from_spec(generate_key_entry("old")).verify_mac("entry-hash", mac, key_id="old", purpose="audit")
        is False
    )
