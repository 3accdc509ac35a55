"""Comprehensive evaluation (综合评价): indicators from case histories, weighted five-grade
scoring, rankings and drill-down (see the README's "Evaluation")."""
