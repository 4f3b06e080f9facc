"""A scikit-learn-compatible classifier that misbehaves on request, for model-server tests."""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: First feature of a row that makes predict raise, print at fd level, or sleep.
RAISE_BELOW = 0.0
FD_WRITE_AT = 50.0
SLOW_ABOVE = 100.0


class TroubleModel(ClassifierMixin, BaseEstimator):
    """Uniform class probabilities, except when the first feature of the first row is:

    negative: raises ValueError; exactly 50: writes a line straight to file descriptor 2 (as a C
    extension would); above 100: prints "slow predict started" then sleeps (value - 100) seconds.
    """

    def fit(self, X, y):
        """Remember the classes and the feature count."""
        X = np.asarray(X)
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        """Uniform probabilities, or the misbehaviour chosen by the first feature."""
        X = np.asarray(X)
        first = float(X[0, 0])
        if first < RAISE_BELOW:
            raise ValueError(f"TroubleModel refuses negative input {first}")
        if first == FD_WRITE_AT:
            os.write(2, b"TroubleModel wrote this line to fd 2\n")
        if first > SLOW_ABOVE:
            print("slow predict started", flush=True)
            time.sleep(first - SLOW_ABOVE)
        return np.full((X.shape[0], len(self.classes_)), 1.0 / len(self.classes_))

    def predict(self, X):
        """The first class, for every row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
