"""Analysis: parameter budgets, subspace similarity, Delta W versus W, tables and figures from run folders."""
