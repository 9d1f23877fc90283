"""One colour per class, used everywhere: report plots, overlay, terminal."""

CLASS_COLORS = {
    "Exc": "#d62728",  # red
    "Inh": "#1f77b4",  # blue
    "Pvalb": "#1f77b4",  # blue
    "Sst": "#ff7f0e",  # orange
    "Vip": "#9467bd",  # purple
    "Ndnf": "#2ca02c",  # green
}
