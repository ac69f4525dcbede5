"""Vending fleets: DEX audits in, sales and stock out, planograms, routes and service orders."""
