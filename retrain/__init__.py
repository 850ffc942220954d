"""retrain: retrain an image classifier for new categories by transfer learning."""

__version__ = "0.2.0"
