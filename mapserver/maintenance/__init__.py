"""Application maintenance (应用维护): organisations, class tables, time limits, the work
calendar and accounts, changed by administrators as signed actions and versioned."""
