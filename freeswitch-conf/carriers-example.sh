#!/bin/sh
# cardd's side of carriers-example.xml: the two carriers, their gateways (tried in this
# order) and their buy decks. Run once, as the user cardd runs as (-c /etc/cardd/cardd.yaml).
# The decks are CSV in the shape of `cardd rate import`:
#   prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace[,forbidden]
# (prices per minute, intervals in seconds; a forbidden prefix is one the carrier does not take).
set -e
cardd carrier add acme --currency USD --gateway 'sofia/gateway/acme-a/{number}' --gateway 'sofia/gateway/acme-b/{number}' --channel-limit 60
cardd carrier add globex --currency USD --gateway 'sofia/gateway/globex/{number}' --priority 50
cardd carrier rates import acme-rates.csv --carrier acme
cardd carrier rates import globex-rates.csv --carrier globex
cardd carrier list
