"""The HTTP JSON API (`cardd api`): operators, resellers and card holders, on the billing service layer."""
