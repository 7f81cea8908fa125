"""Standard Webhooks signing: our signatures verify with the `standardwebhooks` package."""

from __future__ import annotations

import base64
import re
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delivery import signing
from delivery.signing import SignatureError

# The example of the Standard Webhooks / Svix documentation.
DOC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DOC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
DOC_TIMESTAMP = 1614265330
DOC_BODY = b'{"test": 2432232314}'
DOC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"type":"job.published","data":{"job_id":"j-1","version":6}}'


def now() -> int:
    # The standardwebhooks verifier checks timestamps against the real clock.
    return int(time.time())


def secrets_from(raw: bytes) -> str:
    return signing.SECRET_PREFIX + base64.b64encode(raw).decode()


# -- secrets --


def test_new_secrets_are_whsec_and_padded_base64_of_32_random_bytes() -> None:
    made = {signing.new_secret() for _ in range(20)}
    assert len(made) == 20
    for secret in made:
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
        assert len(signing.secret_bytes(secret)) == 32


def test_secret_bytes_accepts_no_prefix_and_no_padding() -> None:
    raw = bytes(range(32))
    encoded = base64.b64encode(raw).decode()
    assert signing.secret_bytes("whsec_" + encoded) == raw
    assert signing.secret_bytes(encoded) == raw
    assert signing.secret_bytes("whsec_" + encoded.rstrip("=")) == raw


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_", "empty"),
        ("", "empty"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_ñññ", "non-ASCII"),
        (secrets_from(b"x" * 16), "24 to 64 bytes, this one holds 16"),
        (secrets_from(b"x" * 65), "24 to 64 bytes, this one holds 65"),
    ],
)
def test_bad_secrets_are_refused_naming_the_problem(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        signing.secret_bytes(secret)
    if len(secret) > len("whsec_"):
        assert secret.removeprefix("whsec_") not in str(caught.value)


# -- signing --


def test_sign_matches_the_specification_example() -> None:
    assert signing.sign(DOC_SECRET, DOC_ID, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE


def test_headers_carry_id_timestamp_signature_type_and_agent() -> None:
    headers = signing.webhook_headers([DOC_SECRET], DOC_ID, DOC_TIMESTAMP, DOC_BODY)
    assert headers == {
        "webhook-id": DOC_ID,
        "webhook-timestamp": str(DOC_TIMESTAMP),
        "webhook-signature": DOC_SIGNATURE,
        "content-type": "application/json",
        "user-agent": "job-ledger-webhooks/1",
    }


def test_the_standardwebhooks_library_verifies_our_headers() -> None:
    secret = signing.new_secret()
    headers = signing.webhook_headers([secret], "msg_1", now(), BODY)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "job.published",
        "data": {"job_id": "j-1", "version": 6},
    }


def test_rotation_lists_current_then_old_and_both_verify() -> None:
    new, old, other = signing.new_secret(), signing.new_secret(), signing.new_secret()
    stamp = now()
    header = signing.signature_header([new, old], "msg_1", stamp, BODY)

    assert header.split(" ") == [
        signing.sign(new, "msg_1", stamp, BODY),
        signing.sign(old, "msg_1", stamp, BODY),
    ]
    headers = signing.webhook_headers([new, old], "msg_1", stamp, BODY)
    for secret in (new, old):
        Webhook(secret).verify(BODY, headers, json_parse=False)
        signing.verify(secret, headers, BODY, now=stamp)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)
    with pytest.raises(SignatureError, match="no matching signature"):
        signing.verify(other, headers, BODY, now=stamp)


def test_signature_header_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signing.signature_header([], "msg_1", 1, BODY)


@pytest.mark.parametrize("part", ["body", "timestamp", "id"])
def test_tampering_is_refused_by_both_verifiers(part: str) -> None:
    secret = signing.new_secret()
    stamp = now()
    headers = signing.webhook_headers([secret], "msg_1", stamp, BODY)
    body = BODY
    if part == "body":
        body = BODY.replace(b"6", b"7")
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(stamp - 1)
    else:
        headers["webhook-id"] = "msg_2"

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
    with pytest.raises(SignatureError, match="no matching signature"):
        signing.verify(secret, headers, body, now=stamp)


# -- our verifier --


def test_verify_checks_the_timestamp_tolerance_both_ways() -> None:
    secret = signing.new_secret()
    headers = signing.webhook_headers([secret], "msg_1", 1_000_000, BODY)
    signing.verify(secret, headers, BODY, now=1_000_300)
    signing.verify(secret, headers, BODY, now=999_700)
    with pytest.raises(SignatureError, match="too old"):
        signing.verify(secret, headers, BODY, now=1_000_301)
    with pytest.raises(SignatureError, match="too new"):
        signing.verify(secret, headers, BODY, now=999_699)
    signing.verify(secret, headers, BODY, now=1_003_600, tolerance=3600)


def test_verify_reads_headers_in_any_case_and_skips_other_versions_and_garbage() -> None:
    secret = signing.new_secret()
    headers = signing.webhook_headers([secret], "msg_1", 1000, BODY)
    good = headers["webhook-signature"]
    mixed = {
        "Webhook-Id": "msg_1",
        "WEBHOOK-TIMESTAMP": "1000",
        "Webhook-Signature": f"v2,{good[3:]} v1,@@@ junk {good}",
    }
    signing.verify(secret, mixed, BODY, now=1000)
    mixed["Webhook-Signature"] = f"v2,{good[3:]}"
    with pytest.raises(SignatureError, match="no matching signature"):
        signing.verify(secret, mixed, BODY, now=1000)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"webhook-id": ""}, "missing header webhook-id"),
        ({"webhook-signature": ""}, "missing header webhook-signature"),
        ({"webhook-timestamp": "12.5"}, "not unix seconds"),
        ({"webhook-timestamp": "-1000"}, "not unix seconds"),
        ({"webhook-timestamp": "9" * 5000}, "not unix seconds"),
    ],
)
def test_verify_refuses_malformed_headers(change: dict[str, str], problem: str) -> None:
    secret = signing.new_secret()
    headers = signing.webhook_headers([secret], "msg_1", 1000, BODY) | change
    with pytest.raises(SignatureError, match=problem):
        signing.verify(secret, headers, BODY, now=1000)


def test_signature_error_has_a_default_message() -> None:
    assert str(SignatureError()) == "The webhook signature does not verify."


# -- message ids --


def test_message_ids_are_stable_msg_and_32_hex_digits() -> None:
    delivery_id = uuid.UUID("0f6c3c1e-8b9a-4d2e-9c61-3b7d2a1f4e55")
    assert signing.message_id(delivery_id) == "msg_0f6c3c1e8b9a4d2e9c613b7d2a1f4e55"
    assert signing.message_id(delivery_id) == signing.message_id(uuid.UUID(str(delivery_id)))
    assert re.fullmatch(r"msg_[0-9a-f]{32}", signing.message_id(uuid.uuid4()))


# -- properties --

raw_secrets = st.binary(min_size=24, max_size=64)
ids = st.one_of(
    st.uuids().map(signing.message_id),
    st.text(st.characters(codec="utf-8", exclude_characters=" \t\r\n"), min_size=1, max_size=60),
)


@given(
    raw=raw_secrets,
    msg_id=ids,
    body=st.text(st.characters(codec="utf-8"), max_size=2000),
)
def test_any_body_and_id_verify_with_the_standardwebhooks_library(
    raw: bytes, msg_id: str, body: str
) -> None:
    secret = secrets_from(raw)
    data = body.encode()
    headers = signing.webhook_headers([secret], msg_id, now(), data)
    Webhook(secret).verify(data, headers, json_parse=False)


@given(
    raws=st.lists(raw_secrets, min_size=1, max_size=4, unique=True),
    msg_id=ids,
    timestamp=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=2000),
)
def test_every_listed_secret_verifies_and_a_flipped_bit_does_not(
    raws: list[bytes], msg_id: str, timestamp: int, body: bytes
) -> None:
    secrets = [secrets_from(raw) for raw in raws]
    headers = signing.webhook_headers(secrets, msg_id, timestamp, body)
    for secret in secrets:
        signing.verify(secret, headers, body, now=timestamp)
    tampered = body + b" " if not body else bytes([body[0] ^ 1]) + body[1:]
    with pytest.raises(SignatureError):
        signing.verify(secrets[0], headers, tampered, now=timestamp)
