"""The supervised learner: the papers' networks trained on each base model's own labelled set by
the engine (:func:`poisoncert.train.train_shard`, called through its public function only)."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import PoisonCertError
from .base import BaseLearner, Fit, RetrainFn, Shard, register

__all__ = ["Supervised", "poison_check_device", "recorded_train_config"]


def poison_check_device(meta: Mapping[str, Any]) -> str:
    """The device the ensemble was trained on (the retrain must run there to reproduce its bits)."""
    import torch

    if "device" not in meta:
        raise PoisonCertError("these scores do not record how their base models were trained (device); the poison check needs a workflow scores file")
    device = "cpu" if meta["device"] == "cpu" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise PoisonCertError("these scores were trained on a GPU; run the poison check where one is visible")
    return device


def recorded_train_config(meta: Mapping[str, Any]):
    """The :class:`poisoncert.train.TrainConfig` a scores file records (``train``)."""
    from ..train import TrainConfig

    if "train" not in meta:
        raise PoisonCertError("these scores do not record how their base models were trained (train); the poison check needs a workflow scores file")
    return TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["train"].items()})


class Supervised(BaseLearner):
    name = "supervised"
    record = "supervised"

    def fit_predict(self, shard: Shard) -> Fit:
        from ..train import train_shard

        ds = shard.dataset
        logits = train_shard(shard.train_sets(), list(shard.seeds), ds.test_images, ds.n_classes, shard.train, device=shard.device,
                             progress=shard.progress)
        return Fit(logits)

    def retrainer(self, ds: Any, meta: Mapping[str, Any], upstream: Mapping[str, str | None]) -> RetrainFn:
        from ..train import train_shard

        cfg = recorded_train_config(meta)
        device = poison_check_device(meta)

        def retrain_fn(train_sets, seeds):
            return train_shard(train_sets, seeds, ds.test_images, ds.n_classes, cfg, device=device, progress=False)

        return retrain_fn


register(Supervised())
