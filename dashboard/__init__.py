"""The customer dashboard (``flavours dashboard``): a Dash app over the warehouse's readers."""
