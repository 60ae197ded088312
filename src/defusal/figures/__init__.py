"""Regenerated figures: each module writes its PNG plots and the CSV numbers behind them."""
