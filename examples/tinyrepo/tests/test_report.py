from tinyrepo.orders import Order
from tinyrepo.report import revenue_by_product


def test_revenue_by_product():
    orders = [Order("bread", 2, 3.0), Order("cake", 1, 10.0), Order("bread", 1, 3.0)]
    assert revenue_by_product(orders) == {"bread": 9.0, "cake": 10.0}
