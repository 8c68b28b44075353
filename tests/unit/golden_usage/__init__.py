"""Golden usage tests (issue 16): each provider's raw usage JSON, as its API sends it →
the normalised ``Usage`` → the exact charge in nanocredits under ``PRICE``
(prices.py), whose every token class has its own rate, so a token priced in the wrong
class changes the charge. One module per provider or case; the end-to-end cases go
through the HTTP app against the fake upstreams (test_through_the_gateway.py)."""
