"""Parsing: turns CSV rows into Order records."""

import csv
from dataclasses import dataclass


@dataclass
class Order:
    product: str
    quantity: int
    unit_price: float


def read_orders(path: str) -> list[Order]:
    with open(path, newline="") as f:
        return [
            Order(row["product"], int(row["quantity"]), float(row["unit_price"]))
            for row in csv.DictReader(f)
        ]
