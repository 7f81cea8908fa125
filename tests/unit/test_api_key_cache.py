"""The API-key cache (`api.auth.KeyCache`) and the shared lookup of `Authenticator`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from api.auth import DEFAULT_KEY_CACHE_SECONDS, Authenticator, KeyCache, Principal
from api.problems import Problem
from jobledger.bootstrap import api_config
from jobledger.settings import Settings, SettingsError
from ledger.tenancy import READER, WRITER, ApiKey, Token


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def who(key_id: str = "k1") -> Principal:
    return Principal(key_id, "tenant-1", WRITER)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = KeyCache(5.0, clock=clock)
    cache.put(b"d1", who(), cache.generation)
    clock.now += 4.9
    assert cache.get(b"d1") == who()
    clock.now += 0.1
    assert cache.get(b"d1") is None
    assert len(cache) == 0


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = KeyCache(0)
    cache.put(b"d1", who(), cache.generation)
    assert cache.get(b"d1") is None


def test_forget_drops_the_key_and_a_lookup_that_began_before() -> None:
    cache = KeyCache(60)
    cache.put(b"d1", who("k1"), cache.generation)
    cache.put(b"d2", who("k1"), cache.generation)  # the same key, another token string
    cache.put(b"d3", who("k2"), cache.generation)
    began = cache.generation
    cache.forget("k1")
    assert cache.get(b"d1") is None
    assert cache.get(b"d2") is None
    assert cache.get(b"d3") == who("k2")
    cache.put(b"d1", who("k1"), began)  # read before the revocation: not kept
    assert cache.get(b"d1") is None


def test_the_cache_is_bounded() -> None:
    cache = KeyCache(60, max_entries=2)
    for n in range(3):
        cache.put(bytes([n]), who(f"k{n}"), cache.generation)
    assert len(cache) == 2
    assert cache.get(bytes([0])) is None  # the oldest went first
    assert cache.get(bytes([2])) == who("k2")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        KeyCache(-1)


def stored_key(role: str = READER) -> tuple[str, ApiKey]:
    token = Token.new()
    now = datetime(2026, 11, 23, tzinfo=UTC)
    key = ApiKey.create(
        token=token, tenant_id=str(uuid4()), role=role, label=None, actor="t", now=now
    )
    return str(token), key


def test_concurrent_requests_share_one_lookup_and_later_ones_hit_the_cache() -> None:
    token, key = stored_key()
    auth = Authenticator(None, key_cache_seconds=60)
    lookups: list[str] = []

    async def lookup(presented: str) -> ApiKey | None:
        lookups.append(presented)
        await asyncio.sleep(0.01)
        return key if presented == token else None

    async def run() -> list[Principal]:
        first = await asyncio.gather(*(auth.key_principal(token, lookup) for _ in range(10)))
        return [*first, await auth.key_principal(token, lookup)]

    found = asyncio.run(run())
    assert lookups == [token]
    assert {p.key_id for p in found} == {str(key.id)}
    assert found[0].role == READER and found[0].tenant_id == key.tenant_id


def test_unknown_tokens_are_401_and_not_cached() -> None:
    auth = Authenticator(None, key_cache_seconds=60)
    lookups: list[str] = []

    async def lookup(presented: str) -> ApiKey | None:
        lookups.append(presented)
        return None

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(Problem) as raised:
                await auth.key_principal("jlk_nothing", lookup)
            assert raised.value.status == 401

    asyncio.run(run())
    assert len(lookups) == 2
    assert len(auth.keys) == 0


def test_a_revocation_during_a_lookup_is_not_outlived_by_it() -> None:
    token, key = stored_key()
    auth = Authenticator(None, key_cache_seconds=60)
    revoked = False

    async def lookup(presented: str) -> ApiKey | None:
        found = None if revoked else key  # read, then the key is revoked before the answer
        await asyncio.sleep(0.02)
        return found

    async def run() -> None:
        nonlocal revoked
        early = asyncio.ensure_future(auth.key_principal(token, lookup))
        await asyncio.sleep(0.005)
        revoked = True
        auth.forget_key(str(key.id))
        assert (await early).key_id == str(key.id)  # it began before the revocation
        with pytest.raises(Problem) as raised:  # a new request does not join that lookup
            await auth.key_principal(token, lookup)
        assert raised.value.status == 401

    asyncio.run(run())
    assert len(auth.keys) == 0


def test_the_setting_reaches_the_app_config() -> None:
    assert Settings().api_key_cache_seconds == DEFAULT_KEY_CACHE_SECONDS
    settings = Settings.from_env({"LEDGER_API_KEY_CACHE_SECONDS": "0"})
    assert api_config(settings).key_cache_seconds == 0
    assert api_config(Settings.from_env({})).key_cache_seconds == DEFAULT_KEY_CACHE_SECONDS
    with pytest.raises(SettingsError, match="LEDGER_API_KEY_CACHE_SECONDS"):
        Settings.from_env({"LEDGER_API_KEY_CACHE_SECONDS": "-1"})


async def settle() -> None:
    """Let the tasks started so far run as far as they can."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_key_in_use_is_read_again_before_its_entry_expires_without_waiting() -> None:
    token, key = stored_key()
    clock = Clock()
    auth = Authenticator(None)
    auth.keys = KeyCache(5.0, clock=clock)
    answers: list[asyncio.Future[ApiKey | None]] = []

    async def lookup(presented: str) -> ApiKey | None:
        answers.append(asyncio.get_running_loop().create_future())
        return await answers[-1]

    async def run() -> None:
        first = asyncio.ensure_future(auth.key_principal(token, lookup))
        await settle()
        answers[0].set_result(key)
        assert (await first).key_id == str(key.id)
        clock.now += 3.9  # not yet in the last fifth of its 5 s
        await auth.key_principal(token, lookup)
        assert len(answers) == 1
        clock.now += 0.2
        # answered from the cache at once, while the re-read waits on the store
        for _ in range(5):
            assert (await auth.key_principal(token, lookup)).key_id == str(key.id)
        await settle()
        assert len(answers) == 2  # one re-read for all of them
        answers[1].set_result(key)
        await settle()
        clock.now += 4.0  # past the first entry's expiry, within the re-read one's
        assert (await auth.key_principal(token, lookup)).key_id == str(key.id)
        assert len(answers) == 2

    asyncio.run(run())


def test_a_re_read_that_finds_the_key_revoked_refuses_it_at_once() -> None:
    token, key = stored_key()
    clock = Clock()
    auth = Authenticator(None)
    auth.keys = KeyCache(5.0, clock=clock)
    revoked = False

    async def lookup(presented: str) -> ApiKey | None:
        return None if revoked else key

    async def run() -> None:
        nonlocal revoked
        await auth.key_principal(token, lookup)
        revoked = True  # in another process: this one's cache still holds the key
        clock.now += 4.5
        assert (await auth.key_principal(token, lookup)).key_id == str(key.id)
        await settle()  # the re-read it started runs, and finds no key
        with pytest.raises(Problem) as raised:
            await auth.key_principal(token, lookup)
        assert raised.value.status == 401

    asyncio.run(run())
    assert len(auth.keys) == 0
