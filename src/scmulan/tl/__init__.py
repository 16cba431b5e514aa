from ._annotate import annotate
from ._embed import embed
from ._generate import generate
from ._perturb import perturb
from ._predict_metadata import predict_metadata
from ._smooth_labels import smooth_labels

__all__ = ["annotate", "embed", "generate", "perturb", "predict_metadata", "smooth_labels"]
