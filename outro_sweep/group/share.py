"""The one place a cell's prediction takes what its group shares (``group`` in conf/config.yaml)."""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager

from omegaconf import DictConfig, OmegaConf

from outro_sweep.cell.identity import identity_of
from outro_sweep.group.models import SharedSession, load_fresh, shared_session
from outro_sweep.group.prefix import PrefixReplay
from outro_sweep.group.towers import TowerCache
from outro_sweep.models.base import LoadedModel, ModelLoader


def model_for_cell(cfg: DictConfig, loader: ModelLoader) -> tuple[LoadedModel, SharedSession | None]:
    """The loaded model (kept from the group's previous cell under ``group.share``) and the
    session whose caches the cell may use (None: nothing shared)."""
    if not cfg.group.share:
        return load_fresh(loader), None
    key = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True, default=str)
    session = shared_session(loader, key, float(cfg.group.cache_gb))
    return session.loaded, session


@contextmanager
def shared_work(cfg: DictConfig, session: SharedSession | None, attached):
    """While a cell predicts with the interventions ``attached``: its towers reuse kept outputs and,
    under ``group.prefix``, its prefills replay kept stock prefixes (its first ``group.verify``
    batches that would replay are run and compared instead)."""
    with ExitStack() as stack:
        if session is not None:
            stack.enter_context(TowerCache(session.loaded.model, session.towers))
            if cfg.group.prefix:
                verify = int(cfg.group.get("verify", 0))
                cell = identity_of(cfg) if verify else "this cell"  # named in a mismatch's message
                stack.enter_context(PrefixReplay(session.loaded.model, attached, session.prefixes, verify=verify,
                                                 cell=cell))
        yield
