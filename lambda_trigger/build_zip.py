"""Build the deployable Lambda zip: handler.py and the modules it imports at the root of the archive,
nothing else (boto3 is in the Lambda Python runtime). Reproducible: fixed timestamps and permissions,
so the same source gives the same bytes and the same CodeSha256.

    python lambda_trigger/build_zip.py [--out build/lambda_trigger.zip]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def modules(source_dir: Path) -> list[str]:
    """Every module of the folder but this script, in a fixed order."""
    return sorted(p.name for p in source_dir.glob("*.py") if p.name != Path(__file__).name)


def build(out: Path, source_dir: Path) -> str:
    """Write the zip and return its SHA-256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in modules(source_dir):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16  # readable by the Lambda runtime's user
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (source_dir / name).read_bytes())
    tmp.replace(out)  # never leave a half-written zip where a deploy would pick it up
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/lambda_trigger.zip"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    digest = build(args.out, here)
    log.info("wrote %s (%d bytes, sha256 %s)", args.out, args.out.stat().st_size, digest)


if __name__ == "__main__":
    main()
