"""bertlab: recipes that make BERT-family classifiers better and more stable, behind one LightningCLI."""

__version__ = "0.1.0"
