"""SS-DPA's learners rotnet and simclr (DPA paper Section 2.3.1): a head per partition on the
features of the shared label-free extractor (upstream role ``extractor``); the head settings are
the experiment's ``head`` block (:class:`poisoncert.semisup.HeadConfig`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ..errors import PoisonCertError
from .base import BaseLearner, Fit, Shard, register
from .extractors import read_checked_extractor

__all__ = ["Heads"]


class Heads(BaseLearner):
    upstream = ("extractor",)

    def __init__(self, name: str) -> None:
        self.name = self.record = name

    def fit_predict(self, shard: Shard) -> Fit:
        from ..semisup import HeadConfig, extractor_config, train_base_heads

        ds = shard.dataset
        path = shard.file("extractor")
        state = read_checked_extractor(path, shard.partitions_meta["dataset_hash"], "data; delete it and rerun")
        ext = extractor_config(state)
        if ext.learner != self.record:
            raise PoisonCertError(f"{path} is a {ext.learner} extractor, not the {self.record} learner's")
        head = HeadConfig.from_dict(dict(shard.options))
        logits = train_base_heads(state, ds.train_images, ds.train_labels, list(shard.members), list(shard.seeds), ds.test_images,
                                  ds.n_classes, head, device=shard.device)
        return Fit(logits, meta={"head_kind": head.resolved(ext.arch), "head": dataclasses.asdict(head)})

    def train_flags(self, exp_name: str, exp: Mapping[str, Any]) -> list[str]:
        return super().train_flags(exp_name, exp) + ["--head-config", json.dumps(exp["head"])]

    def check_config(self, exp: Mapping[str, Any], where: str) -> None:
        arch = exp["extractor"]["arch"]
        if exp["head"]["kind"] == "nin_block" and arch != "nin":
            raise PoisonCertError(f"{where}.head.kind: nin_block needs the feature maps of extractor.arch nin, not '{arch}'; use linear or logistic")


register(Heads("rotnet"))
register(Heads("simclr"))
