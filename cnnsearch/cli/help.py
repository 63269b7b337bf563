"""The longer --help texts of the search command, kept apart so the command reads as its options."""

SAMPLER_HELP = (
    "How candidates are proposed; pick by budget. tpe (default): it models every parameter, "
    "conditional ones included, after 8 random trials (Fashion-MNIST, 10 minutes, 3 seeds: 89.65% test "
    "accuracy, random without pruning 89.54%). random: no model; a baseline, a first look at a new space "
    "or a budget of a few dozen trials. gp: a Gaussian process over every parameter (flat "
    "encoding), after 10 random trials; for small budgets (tens of trials) of long trials, each proposal "
    "costs a second or more of fitting. cmaes: models the numeric ranges (lr, weight decay, stage counts), choices "
    "stay random; for spaces that are mostly ranges. pso: a swarm of 5 particles over every parameter; "
    "for runs of 20+ trials, several workers share one swarm, one objective only (one Fashion-MNIST seed: "
    "89.88%). nsga2: genetic, for "
    "Pareto searches (--objective with two). Fallback warnings go to runs/NAME/search.log."
)
EXPORT_HELP = (
    "When the search ends, export its best model to this folder. With --timeout the whole job fits the budget: "
    "30% of it is kept for the final training (as many epochs as fit, up to 10x the search's)."
)
