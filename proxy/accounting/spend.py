"""`Spend`: the metrics of how the cost is known: the price data in force, and the cost priced from estimates.

Beside `proxy.accounting.metrics` (which records them with the rest of a request): a stream that ended before
its upstream reported usage is priced from an estimate (`proxy.billing`), and that part of the cost is counted
apart, so that a dashboard can tell billed from estimated spend.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.accounting.batch import Batch, Children
from proxy.accounting.prices import PRICES_VERSION

__all__ = ["Spend"]


class Spend:
    """`turnout_cost_estimated_usd` and `turnout_price_data_info`, in the registry of the app's `Metrics`."""

    def __init__(self, registry: CollectorRegistry, batch: Batch) -> None:
        self.estimated_cost = Counter(
            "turnout_cost_estimated_usd",
            "The part of the cost priced from estimated usage (streams that ended before their usage came).",
            ["route", "model"],
            registry=registry,
        )
        self.estimated = Children(self.estimated_cost, batch)
        self.price_data = Gauge(
            "turnout_price_data_info",
            "Always 1; the label says which price data is in force (the shipped table's date, +policy).",
            ["version"],
            multiprocess_mode="max",
            registry=registry,
        )
        self._version: str | None = None
        self.prices_in_force(PRICES_VERSION)

    def prices_in_force(self, version: str) -> None:
        """The price data now in force (`proxy.accounting.cost.PriceTable.version`): its series 1, the last one's 0.

        Set to 0 rather than removed: with several workers, a value once written stays in the workers' files.
        """
        if self._version is not None and self._version != version:
            self.price_data.labels(self._version).set(0)
        self._version = version
        self.price_data.labels(version).set(1)
