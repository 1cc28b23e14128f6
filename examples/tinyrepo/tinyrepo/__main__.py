"""Command-line entry point: `python -m tinyrepo ORDERS.csv`."""

import sys

from .orders import read_orders
from .report import revenue_by_product, format_report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tinyrepo ORDERS.csv", file=sys.stderr)
        return 2
    orders = read_orders(argv[0])
    print(format_report(revenue_by_product(orders)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
