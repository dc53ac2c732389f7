"""Trust bootstrap: a ledger home with root keys, the trust policy and the genesis entry.

``ailedger init DIR`` lays out::

    DIR/trust.json          the trust policy the regulator publishes
    DIR/genesis.json        LedgerGenesis, signed by the regulator root (becomes index 0)
    DIR/keys/regulator.pem  the regulator's root key (0600)
    DIR/keys/notary.pem     the notary's key: signs receipts and checkpoints (0600)
    DIR/keys/witness.pem    the local witness's key: cosigns checkpoints (0600)
    DIR/witness/            the local witness's state (what it cosigned; never derived)
    DIR/nats/               the embedded NATS server's store (``ailedger up``)
    DIR/state/              derived state (SQLite), always rebuildable from LEDGER
    DIR/run/nats.url        the URL of the running embedded server
    DIR/bus/                bus identities (0700): seeds/<name>.nk (0600) and
                            identities.json (name -> public nkey), DESIGN §7
    DIR/config.json         remembered settings: {"nats": "<URL of an external server>"}

``ailedger init`` also remembers the home it made in the user's configuration
(``$XDG_CONFIG_HOME/ailedger/home``, else ``~/.config/ailedger/home``), as the
nats CLI remembers its context: later commands find it without ``--home``.
The home is chosen by :func:`resolve_home`: ``--home``, then ``$AILEDGER_HOME``,
then ``./.ailedger`` if it is a ledger home, then the remembered one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ledger.bus.auth import GATEWAY, NOTARY, OPERATOR, READER, BusIdentities
from ledger.bus.client import sign_event
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import ActorKey, generate, load_key, save_key
from ledger.formats.note import Signer, verifier_key
from ledger.formats.timeutil import SystemClock
from ledger.formats.trust import TrustedKey, TrustPolicy
from ledger.formats.witness import create_witness_key, load_witness_key, witness_name
from ledger.law import events as ev
from ledger.law.rulebook import default_policy

__all__ = [
    "DEFAULT_HOME",
    "Home",
    "HomeExists",
    "init_home",
    "remember_home",
    "remembered_home",
    "resolve_home",
    "user_config_dir",
]

#: The home in the working directory, used when nothing else names one.
DEFAULT_HOME = Path(".ailedger")


class HomeExists(LedgerError, FileExistsError):
    """``ailedger init`` into a directory that already holds a ledger."""

    code = "home_exists"
    exit_status = USAGE


@dataclass(frozen=True)
class Home:
    """The files of one ledger installation."""

    path: Path

    @property
    def trust_path(self) -> Path:
        return self.path / "trust.json"

    @property
    def genesis_path(self) -> Path:
        return self.path / "genesis.json"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def regulator_key_path(self) -> Path:
        return self.keys_dir / "regulator.pem"

    @property
    def notary_key_path(self) -> Path:
        return self.keys_dir / "notary.pem"

    @property
    def witness_key_path(self) -> Path:
        """The key of this home's own witness (``ailedger witness``; 0600)."""
        return self.keys_dir / "witness.pem"

    @property
    def witness_dir(self) -> Path:
        """The witness's durable state: what it cosigned (not derived, never delete it)."""
        return self.path / "witness"

    @property
    def nats_dir(self) -> Path:
        return self.path / "nats"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def tree_path(self) -> Path:
        return self.state_dir / "tree.hashes"

    @property
    def bus_dir(self) -> Path:
        return self.path / "bus"

    def identities(self) -> BusIdentities:
        """The bus identities (nkeys) of this installation."""
        return BusIdentities(self.bus_dir)

    def ensure_bus_identities(self) -> BusIdentities:
        """The services' identities (the HTTP gateway's too: ``ailedger web`` forwards
        actors' signed envelopes as ``_gateway``, DESIGN §7) and the regulator's (enrolled
        by the genesis entry), generated where missing: an older home gets them too."""
        identities = self.identities()
        for name in (OPERATOR, NOTARY, READER, GATEWAY, self.trust().regulator):
            identities.ensure(name)
        return identities

    def bus_identity(self, name: str) -> dict[str, Any]:
        """Connect options for identity ``name``, or {} when this home has no bus identities
        (a home made before authorization: the server then needs none either)."""
        identity = self.identities().get(name)
        return identity.connect_options() if identity is not None else {}

    @property
    def url_file(self) -> Path:
        return self.path / "run" / "nats.url"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def config(self) -> dict[str, str]:
        """Remembered settings (``nats``: the URL of an external server), or {}."""
        try:
            doc = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict):
            return {}
        return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}

    def save_config(self, **settings: str | None) -> None:
        """Merge ``settings`` into config.json; a None value forgets that setting."""
        doc = self.config()
        for name, value in settings.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def witness_urls(self) -> list[str]:
        """The witnesses the notary asks to cosign (``config.json`` ``witnesses``:
        space-separated tlog-witness URL prefixes); empty: the home's own witness,
        run beside the notary, if it has one."""
        return self.config().get("witnesses", "").split()

    @property
    def nats_url(self) -> str | None:
        """The external NATS server this home was set up with (``init --nats``), if any."""
        return self.config().get("nats")

    def exists(self) -> bool:
        return self.trust_path.exists() and self.genesis_path.exists()

    def trust(self) -> TrustPolicy:
        return TrustPolicy.load(self.trust_path)

    def notary_signer(self) -> Signer:
        key = load_key(self.notary_key_path)
        return Signer.from_private_key(self.trust().origin, key.private_key)

    def witness_name(self) -> str:
        """The name of this home's witness key: ``<host of the origin>/witness``."""
        return witness_name(self.trust().origin)

    def ensure_witness_key(self, origin: str | None = None) -> str:
        """Create the witness key where missing; return its cosignature verifier key.
        ``origin``: the log's (default: the trust policy's, which must then exist)."""
        name = witness_name(origin) if origin is not None else self.witness_name()
        if not self.witness_key_path.exists():
            return create_witness_key(self.witness_key_path, name)
        return load_witness_key(self.witness_key_path, name).verifier().vkey

    def regulator_key(self) -> ActorKey:
        return load_key(self.regulator_key_path)

    def genesis(self) -> bytes:
        return self.genesis_path.read_bytes()


def init_home(
    path: Path,
    *,
    origin: str,
    regulator: str = "regulator",
    regulator_name: str = "Ministry of Artificial Intelligence and Digital Development",
    regulator_bin: str = "000000000000",
    at: datetime | None = None,
    local_witness: bool = False,
) -> Home:
    """Create keys, the trust policy and the signed genesis envelope in ``path``.

    With ``local_witness``, also a witness key in the home, trusted with quorum 1:
    ``ailedger up`` and the demo then run that witness beside the notary. This
    is a demonstration; real deployments name independent witnesses."""
    home = Home(path)
    if home.trust_path.exists() or home.genesis_path.exists():
        raise HomeExists(f"{path} already holds a ledger (trust.json / genesis.json)")
    signed_at = at or SystemClock().now()
    regulator_key = generate(regulator)
    notary_key = generate("notary")
    save_key(regulator_key, home.regulator_key_path)
    save_key(notary_key, home.notary_key_path)
    notary_vkey = verifier_key(origin, notary_key.public_key)
    witness_vkeys = [home.ensure_witness_key(origin)] if local_witness else []
    trust = TrustPolicy(
        origin=origin,
        regulator=regulator,
        regulator_keys=[TrustedKey(key=regulator_key.public_key_b64)],
        log_keys=[TrustedKey(key=notary_vkey)],
        witness_keys=[TrustedKey(key=k) for k in witness_vkeys],
        witness_quorum=len(witness_vkeys),
    )
    trust.save(home.trust_path)
    genesis = ev.LedgerGenesis(
        v=1,
        event_id=ev.new_event_id(),
        actor=regulator,
        subject="ledger/genesis",
        signed_at=signed_at,
        origin=origin,
        regulator_name=regulator_name,
        regulator_bin=regulator_bin,
        regulator_keys=[regulator_key.public_key_b64],
        notary_keys=[notary_vkey],
        witness_keys=witness_vkeys,
        witness_quorum=len(witness_vkeys),
        policy=default_policy(signed_at),
    )
    home.genesis_path.write_bytes(sign_event(genesis, regulator_key))
    for d in (home.nats_dir, home.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    home.ensure_bus_identities()
    return home


def user_config_dir() -> Path:
    """The user's ailedger configuration directory (`$XDG_CONFIG_HOME/ailedger`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ailedger"


def remember_home(path: Path) -> None:
    """Remember ``path`` (made absolute) as the user's ledger home."""
    directory = user_config_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "home").write_text(f"{path.resolve()}\n")
    except OSError:
        pass  # a read-only home directory: the user passes --home instead


def remembered_home() -> Path | None:
    """The home the last ``ailedger init`` remembered, if it still exists."""
    try:
        text = (user_config_dir() / "home").read_text().strip()
    except OSError:
        return None
    return Path(text) if text and Home(Path(text)).exists() else None


def resolve_home(explicit: Path | None) -> Path:
    """The ledger home: ``explicit`` (``--home`` or ``$AILEDGER_HOME``), else
    ``./.ailedger`` if it holds a ledger, else the remembered one, else ``./.ailedger``."""
    if explicit is not None:
        return explicit
    if Home(DEFAULT_HOME).exists():
        return DEFAULT_HOME
    return remembered_home() or DEFAULT_HOME
