"""The frozen-feature learner (beyond the papers, issue 16): a nearest-centroid or k-NN rule per
partition on the frozen features of the shared label-free extractor (upstream role ``extractor``;
settings: the experiment's ``frozen`` block, :class:`poisoncert.frozen.FrozenConfig`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ..errors import PoisonCertError
from .base import BaseLearner, Fit, RetrainFn, Shard, register
from .extractors import read_checked_extractor

__all__ = ["Frozen"]


def _config(fields: Mapping[str, Any]):
    from ..frozen import FrozenConfig

    try:
        return FrozenConfig(**dict(fields))
    except TypeError as exc:
        raise PoisonCertError(f"bad frozen-learner configuration: {exc}") from None


class Frozen(BaseLearner):
    name = record = "frozen"
    upstream = ("extractor",)

    def fit_predict(self, shard: Shard) -> Fit:
        from ..frozen import fit_predict, frozen_features

        ds = shard.dataset
        state = read_checked_extractor(shard.file("extractor"), shard.partitions_meta["dataset_hash"], "data; delete it and rerun")
        cfg = _config(shard.options)
        ftr, fte = frozen_features(state, ds.train_images, ds.test_images, shard.device)
        logits = fit_predict(ftr, ds.train_labels, list(shard.members), list(shard.seeds), fte, ds.n_classes, cfg)
        return Fit(logits, meta={"frozen": dataclasses.asdict(cfg)})

    def train_flags(self, exp_name: str, exp: Mapping[str, Any]) -> list[str]:
        return super().train_flags(exp_name, exp) + ["--learner", self.name, "--learner-config", json.dumps(exp["frozen"])]

    def retrainer(self, ds: Any, meta: Mapping[str, Any], upstream: Mapping[str, str | None]) -> RetrainFn:
        from ..frozen import FrozenConfig, frozen_learner
        from .supervised import poison_check_device

        path = upstream.get("extractor")
        if path is None:
            raise PoisonCertError("learner frozen: pass the experiment's extractor file (--extractor results/<exp>/extractor.pt)")
        state = read_checked_extractor(path, meta.get("dataset_hash"), "data than these scores; give the experiment's own extractor")
        fields = (meta.get("experiment") or {}).get("frozen") or {}
        return frozen_learner(state, ds.train_images, ds.test_images, ds.n_classes, FrozenConfig(**fields), device=poison_check_device(meta))


register(Frozen())
