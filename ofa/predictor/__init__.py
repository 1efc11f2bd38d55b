"""The accuracy dataset (measured subnets) and the MLP accuracy predictor fitted on it."""

from ofa.predictor.dataset import build_acc_dataset, measure_configs, read_dataset, sample_configs
from ofa.predictor.fit import fit_predictor
from ofa.predictor.model import Predictor, load_predictor

__all__ = ["Predictor", "build_acc_dataset", "fit_predictor", "load_predictor",
           "measure_configs", "read_dataset", "sample_configs"]
