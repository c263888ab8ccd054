"""``ctrlshift publish DIR --repo OWNER/NAME``: a verified dataset folder to the Hugging Face Hub.

The folder is checked first (``ctrlshift check``: a damaged dataset is never published). Files
are uploaded with ``huggingface_hub``, one commit per config and a last one for the card,
manifest and grids, so an interrupted push resumes where it stopped: a rerun skips the configs the
repository already holds for the same dataset hash. ``.ctrlshift/`` (lock, shard records) stays
local. ``--dry-run`` prints the plan without any network.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path


from ..errors import ConfigError, CtrlshiftError
from ..names import is_safe
from .check import check_dataset
from .format import STATE_DIR
from .reader import Dataset

log = logging.getLogger(__name__)

LOCAL_ONLY = (f"{STATE_DIR}/", ".cache/", ".tmp-")


def check_repo_id(repo: str) -> str:
    owner, sep, name = repo.partition("/")
    if not sep or not is_safe(owner) or not is_safe(name):
        raise ConfigError(f"--repo: {repo!r} is not OWNER/NAME (letters, digits and . _ - in each part)")
    return repo


def plan(root: str | Path) -> list[tuple[str, int]]:
    """(path in the repository, size in bytes) of every file that would be uploaded."""
    root = Path(root)
    files = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not rel.startswith(LOCAL_ONLY) and not p.name.startswith(".tmp-"):
            files.append((rel, p.stat().st_size))
    return files


def describe(root: Path, repo: str, files: list[tuple[str, int]], private: bool, revision: str | None) -> str:
    total = sum(s for _, s in files)
    card = (root / "README.md").read_text()
    front = card.split("---\n")[1] if card.startswith("---\n") else ""
    lines = [f"publish {root} -> https://huggingface.co/datasets/{repo}"
             f" ({'private' if private else 'public'}{', revision ' + revision if revision else ''}): "
             f"{len(files)} files, {total / 1e6:.2f} MB"]
    lines += [f"  {size:>12,}  {rel}" for rel, size in files]
    lines += ["card front matter:", *("  " + line for line in front.rstrip().splitlines())]
    return "\n".join(lines)


def publish(root: str | Path, repo: str, private: bool = False, revision: str | None = None,
            dry_run: bool = False) -> str:
    """Upload a checked dataset folder (or, with ``dry_run``, only describe the upload)."""
    repo = check_repo_id(repo)
    ds = Dataset.open(root)
    problems, _ = check_dataset(ds.root)
    if problems:
        raise CtrlshiftError(f"{ds.root}: {len(problems)} problems (the first: {problems[0]}); run "
                             f"`ctrlshift check {ds.root}` and repair the folder before publishing it")
    files = plan(ds.root)
    text = describe(ds.root, repo, files, private, revision)
    if dry_run:
        return text
    import huggingface_hub
    from huggingface_hub import HfApi

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise CtrlshiftError("publish: HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it (and connect) "
                             "to publish; nothing was uploaded")
    token = huggingface_hub.get_token()
    if not token:
        raise CtrlshiftError("publish: no Hugging Face token; run `hf auth login` or set HF_TOKEN; nothing was uploaded")
    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, repo_type="dataset", exist_ok=True)
        remote = set(api.list_repo_files(repo, repo_type="dataset", revision=revision))
        same = _remote_hash(api, repo, revision, remote) == ds.dataset_hash
        for config in ds.configs:
            mine = [rel for rel, _ in files if rel.startswith(f"data/{config}/")]
            if same and all(rel in remote for rel in mine):
                log.info("%s: already on the Hub", config)
                continue
            log.info("uploading %s (%d shards)", config, len(mine))
            api.upload_folder(repo_id=repo, folder_path=str(ds.root), repo_type="dataset", revision=revision,
                              allow_patterns=[f"data/{config}/*"], commit_message=f"ctrlshift: {config}")
        api.upload_folder(repo_id=repo, folder_path=str(ds.root), repo_type="dataset", revision=revision,
                          ignore_patterns=["data/*", f"{STATE_DIR}/*", ".cache/*", ".tmp-*"],
                          commit_message=f"ctrlshift: card, manifest and grids of {ds.dataset_hash[:12]}")
    except Exception as exc:  # the network, the token's rights, the Hub: one line naming the cause
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CtrlshiftError(f"publish: the upload to {repo} failed ({type(exc).__name__}: {first}); check the "
                             "network and the token's write access, then rerun: finished configs are kept") from None
    return text + f"\npublished: https://huggingface.co/datasets/{repo}"


def _remote_hash(api, repo: str, revision: str | None, remote: set[str]) -> str | None:
    if "manifest.json" not in remote:
        return None
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, "manifest.json", repo_type="dataset", revision=revision, token=api.token)
    try:
        return json.loads(Path(path).read_text()).get("dataset_hash")
    except (OSError, json.JSONDecodeError):
        return None


__all__ = ["check_repo_id", "describe", "plan", "publish"]
