"""AES-256-GCM: sealed signing secrets and per-endpoint payload encryption."""

from __future__ import annotations

import base64
import random
import time

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from delivery import signing
from delivery.crypto import (
    SealError,
    SecretBox,
    decrypt_payload,
    encrypt_payload,
    generate_key,
    new_payload_key,
)

KEY = bytes(range(32))
BOX = SecretBox(KEY)
ENDPOINT = b"endpoint-7f3a"


def b64decode_url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- SecretBox --


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time() -> None:
    secret = signing.new_secret()
    first, second = BOX.seal(secret), BOX.seal(secret)
    assert first != second
    assert first.startswith("v1.")
    assert "=" not in first
    assert len(b64decode_url(first[3:])) == 12 + len(secret) + 16
    assert BOX.open(first) == BOX.open(second) == secret
    assert secret not in first


def test_associated_data_binds_a_sealed_value_to_its_endpoint() -> None:
    sealed = BOX.seal("whsec_x", associated_data=ENDPOINT)
    assert BOX.open(sealed, associated_data=ENDPOINT) == "whsec_x"
    with pytest.raises(SealError):
        BOX.open(sealed, associated_data=b"endpoint-other")
    with pytest.raises(SealError):
        BOX.open(sealed)


def test_a_wrong_key_does_not_open() -> None:
    sealed = BOX.seal("whsec_x")
    with pytest.raises(SealError, match="tampered, or a wrong key"):
        SecretBox(bytes(32)).open(sealed)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("v2.AAAA", "expected the prefix 'v1.'"),
        ("whsec_abc", "expected the prefix 'v1.'"),
        ("v1.", "too short"),
        ("v1.AAAAAAAA", "too short"),
        ("v1.ñ", "not valid base64url"),
        ("v1." + "A" * 41, "not valid base64url"),
        ("v1." + "A" * 40 + "+/", "not valid base64url"),
        ("v1." + "A" * 40 + "==", "not valid base64url"),
    ],
)
def test_malformed_tokens_are_refused(token: str, problem: str) -> None:
    with pytest.raises(SealError, match=problem):
        BOX.open(token)


@given(plaintext=st.text(max_size=300), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_text_round_trips_and_any_flipped_bit_is_detected(
    plaintext: str, position: int, bit: int
) -> None:
    sealed = BOX.seal(plaintext, associated_data=ENDPOINT)
    assert BOX.open(sealed, associated_data=ENDPOINT) == plaintext

    raw = bytearray(b64decode_url(sealed[3:]))
    raw[position % len(raw)] ^= 1 << bit
    tampered = "v1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SealError):
        BOX.open(tampered, associated_data=ENDPOINT)


def test_keys_come_from_settings_as_base64() -> None:
    key = generate_key()
    assert len(base64.b64decode(key)) == 32
    assert generate_key() != key
    box = SecretBox.from_setting(f"  {key}\n")
    assert box.open(SecretBox.from_setting(key).seal("s")) == "s"
    urlsafe = base64.urlsafe_b64encode(KEY).rstrip(b"=").decode()
    assert SecretBox.from_setting(urlsafe).open(BOX.seal("s")) == "s"


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("", "must be 32 bytes of base64, not 0 bytes"),
        (base64.b64encode(b"k" * 16).decode(), "not 16 bytes"),
        ("not base64 at all!", "not valid base64"),
    ],
)
def test_bad_key_settings_are_refused_without_echoing_them(setting: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        SecretBox.from_setting(setting)
    if setting:
        assert setting not in str(caught.value)


def test_the_key_is_checked_and_never_shown() -> None:
    with pytest.raises(ValueError, match="32 bytes, not 31"):
        SecretBox(bytes(31))
    assert repr(BOX) == "SecretBox(<key hidden>)"


# -- payload encryption --

PAYLOAD_KEY = base64.b64encode(bytes(range(100, 132))).decode()
BODY = b'{"type":"job.published","data":{"job_id":"j-1"}}'


def test_envelope_is_a256gcm_with_iv_ciphertext_and_tag_in_base64() -> None:
    envelope = orjson.loads(encrypt_payload(PAYLOAD_KEY, BODY))
    assert sorted(envelope) == ["ciphertext", "encryption", "iv", "tag"]
    assert envelope["encryption"] == "A256GCM"
    iv, tag = base64.b64decode(envelope["iv"]), base64.b64decode(envelope["tag"])
    ciphertext = base64.b64decode(envelope["ciphertext"])
    assert (len(iv), len(tag), len(ciphertext)) == (12, 16, len(BODY))
    # A consumer with nothing but a standard AES-GCM library can open it.
    key = base64.b64decode(PAYLOAD_KEY)
    assert AESGCM(key).decrypt(iv, ciphertext + tag, None) == BODY


def test_payload_round_trip_with_a_fresh_iv_each_time() -> None:
    first, second = encrypt_payload(PAYLOAD_KEY, BODY), encrypt_payload(PAYLOAD_KEY, BODY)
    assert orjson.loads(first)["iv"] != orjson.loads(second)["iv"]
    assert decrypt_payload(PAYLOAD_KEY, first) == decrypt_payload(PAYLOAD_KEY, second) == BODY


def test_a_seeded_iv_source_makes_the_envelope_reproducible() -> None:
    one = encrypt_payload(PAYLOAD_KEY, BODY, rng=random.Random(3).randbytes)
    two = encrypt_payload(PAYLOAD_KEY, BODY, rng=random.Random(3).randbytes)
    assert one == two
    with pytest.raises(ValueError, match="gave 4 bytes, not 12"):
        encrypt_payload(PAYLOAD_KEY, BODY, rng=lambda n: b"abcd")


def test_the_encrypted_envelope_is_what_is_signed() -> None:
    secret = signing.new_secret()
    envelope = encrypt_payload(PAYLOAD_KEY, BODY)
    headers = signing.webhook_headers([secret], "msg_1", int(time.time()), envelope)
    opened = Webhook(secret).verify(envelope, headers)
    assert decrypt_payload(PAYLOAD_KEY, orjson.dumps(opened)) == BODY


def _altered(field: str) -> bytes:
    envelope = orjson.loads(encrypt_payload(PAYLOAD_KEY, BODY))
    raw = bytearray(base64.b64decode(envelope[field]))
    raw[0] ^= 0x01
    envelope[field] = base64.b64encode(bytes(raw)).decode()
    return orjson.dumps(envelope)


@pytest.mark.parametrize("field", ["iv", "ciphertext", "tag"])
def test_an_altered_envelope_is_refused(field: str) -> None:
    with pytest.raises(SealError, match="tampered, or a wrong key"):
        decrypt_payload(PAYLOAD_KEY, _altered(field))


def test_another_endpoints_key_does_not_decrypt() -> None:
    with pytest.raises(SealError):
        decrypt_payload(new_payload_key(), encrypt_payload(PAYLOAD_KEY, BODY))


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not an A256GCM envelope"),
        (b'{"encryption": "A128GCM"}', "not an A256GCM envelope"),
        (b'{"encryption": "A256GCM", "iv": "AAAA"}', "no ciphertext"),
        (
            b'{"encryption": "A256GCM", "iv": "**", "ciphertext": "", "tag": ""}',
            "iv is not valid base64",
        ),
        (
            b'{"encryption": "A256GCM", "iv": "AAAA", "ciphertext": "", "tag": "AAAA"}',
            "12-byte iv and a 16-byte tag",
        ),
    ],
)
def test_malformed_envelopes_are_refused(envelope: bytes, problem: str) -> None:
    with pytest.raises(SealError, match=problem):
        decrypt_payload(PAYLOAD_KEY, envelope)


def test_payload_keys_are_base64_of_32_bytes() -> None:
    key = new_payload_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    with pytest.raises(ValueError, match="payload key must be 32 bytes"):
        encrypt_payload(base64.b64encode(b"short").decode(), BODY)


@given(body=st.binary(max_size=4096))
def test_any_body_round_trips(body: bytes) -> None:
    assert decrypt_payload(PAYLOAD_KEY, encrypt_payload(PAYLOAD_KEY, body)) == body
