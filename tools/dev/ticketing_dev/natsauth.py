"""NATS identities for a local server: one nkey per name in the cluster's nats.conf, generated fresh, never committed.

`make dev` and the test suite run nats-server with infra/k8s/base/nats/nats.conf itself, so the permissions they
test are the ones the cluster enforces; only the keys differ (the cluster's come from Secrets).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nkeys

from ticketing_dev.repo import repo_root

OPERATOR = "operator"
PROVISIONER = "provisioner"
_KEY_VARIABLE = re.compile(r"\$NATS_([A-Z]+)_NKEY\b")


def nats_config(root: Path | None = None) -> Path:
    """The cluster's NATS authorization config (the ConfigMap nats-config)."""
    return (root or repo_root()) / "infra" / "k8s" / "base" / "nats" / "nats.conf"


def identities(config: Path) -> list[str]:
    """The identities the config names ($NATS_<NAME>_NKEY), lowercased: services, provisioner, operator."""
    return sorted({name.lower() for name in _KEY_VARIABLE.findall(config.read_text())})


def new_seed() -> str:
    """A fresh nkey user seed (SU...)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The public key (U...) of a user seed."""
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


@dataclass(frozen=True)
class NatsAuth:
    """The config file and a seed per identity it names."""

    config: Path
    seeds: dict[str, str]

    @classmethod
    def generate(cls, config: Path | None = None) -> NatsAuth:
        """Fresh keys for every identity of the config."""
        path = config or nats_config()
        return cls(path, {name: new_seed() for name in identities(path)})

    def seed(self, identity: str) -> str:
        """The seed an identity connects with."""
        return self.seeds[identity]

    def server_env(self) -> dict[str, str]:
        """What nats-server reads the public keys from, as the StatefulSet's env gives them."""
        return {f"NATS_{name.upper()}_NKEY": public_key(seed) for name, seed in self.seeds.items()}

    def write_seeds(self, directory: Path) -> dict[str, Path]:
        """Each seed in its own owner-only file (the CLI reads the operator's); returns the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        paths: dict[str, Path] = {}
        for name, seed in self.seeds.items():
            path = directory / f"{name}.nk"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(seed + "\n")
            paths[name] = path
        return paths


def main() -> None:
    """`python -m ticketing_dev.natsauth [NAMESPACE]`: the kubectl commands that create a fresh key per identity.

    Prints them (pipe to `sh`): each Secret `<identity>-nats-secret` holds NATS_NKEY_SEED (its owner's) and NATS_NKEY
    (the public key, which the NATS server reads).
    """
    namespace = sys.argv[1] if len(sys.argv) > 1 else "ticketing"
    for name, seed in NatsAuth.generate().seeds.items():
        print(
            f"kubectl -n {namespace} create secret generic {name}-nats-secret "
            f"--from-literal=NATS_NKEY={public_key(seed)} --from-literal=NATS_NKEY_SEED={seed}"
        )


if __name__ == "__main__":
    main()
