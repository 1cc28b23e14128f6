"""Aggregation and formatting: revenue per product, highest first."""

from collections import defaultdict

from .orders import Order


def revenue_by_product(orders: list[Order]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for order in orders:
        totals[order.product] += order.quantity * order.unit_price
    return dict(totals)


def format_report(totals: dict[str, float]) -> str:
    rows = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return "\n".join(f"{product:<20} {amount:>10.2f}" for product, amount in rows)
