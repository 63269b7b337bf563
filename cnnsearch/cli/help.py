"""The longer --help texts of the search command, kept apart so the command reads as its options."""

SAMPLER_HELP = (
    "How candidates are proposed; every sampler but random first trains the space's starters "
    "(--no-starters). Fashion-MNIST, 10 minutes end to end on 2 CPU cores, 3 seeds with starters, test "
    "accuracy: cmaes 91.81%, gp 91.68%, tpe 91.66%, pso 91.18%, random 90.35%; tpe, gp and cmaes exported "
    "the second starter in all 9 runs, so at such budgets the starters decide, not the sampler (the first "
    "three are within noise of each other). tpe (default): models every parameter, conditional ones "
    "included, after 8 random trials. random: no model and no starters; a baseline, a first look at a new "
    "space, or a search that must not start from the starters. gp: a Gaussian process over every "
    "parameter (flat encoding) after 10 random trials; each proposal costs a second or more of fitting. "
    "cmaes: models the numeric ranges (lr, weight decay, stage counts); choices stay random. pso: a swarm "
    "of 5 particles over every parameter; one objective, several workers share one swarm. nsga2: genetic, "
    "for Pareto searches (--objective with two). Fallback warnings go to runs/NAME/search.log."
)
EXPORT_HELP = (
    "When the search ends, export its best model to this folder. With --timeout the whole job fits the budget: "
    "30% of it is kept for the final training (as many epochs as fit, up to 10x the search's)."
)
