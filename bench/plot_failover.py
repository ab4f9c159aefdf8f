"""Draws the failover timelines `bench failover` writes (JSON) as one PNG.

One panel per mode (passive detection, long-poll alone, polling alone), each showing
the first trial: every request as a dot at the time it was sent (relative to the kill
of east's service), on the row of the cluster that answered it, or on the "failed"
row. Vertical lines mark the kill, the full switch (the last request still sent to
the dead primary) and the controller's table saying Unhealthy.

    python bench/plot_failover.py bench/out/failover.json bench/failover.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt  # noqa: E402

ROWS = ["east", "west", "failed"]
COLOURS = {"east": "tab:blue", "west": "tab:green", "failed": "tab:red"}


def panel(ax, mode):
    trial = mode["trials"][0]
    points = trial["points"]
    full = trial["full_switch_ms"] or 0.0
    table = trial["table_ms"]
    # Short enough to resolve the passive switch (over in milliseconds), long enough to
    # show the table switching in the other modes.
    if mode["key"] == "passive":
        end = max(full, 40.0) * 3
    else:
        end = max(full, table) * 1.25 + 100.0
    start = -0.15 * end
    for row, name in enumerate(ROWS):
        xs = [p["sent_ms"] for p in points if p["by"] == name and start <= p["sent_ms"] <= end]
        ys = [row] * len(xs)
        ax.scatter(xs, ys, s=9, color=COLOURS[name], label=f"{name} ({len(xs)})")
    ax.axvline(0, color="black", linewidth=1)
    ax.text(0, len(ROWS) - 0.45, "kill ", fontsize=8, va="top", ha="right")
    if trial["full_switch_ms"] is not None:
        ax.axvline(full, color="tab:orange", linestyle="--", linewidth=1)
        ax.text(full, len(ROWS) - 0.75, f" full switch {full:.0f} ms", fontsize=8, va="top")
    if table <= end:
        ax.axvline(table, color="tab:purple", linestyle=":", linewidth=1)
        ax.text(table, -0.45, f" table Unhealthy {table:.0f} ms", fontsize=8, va="bottom")
    else:
        ax.text(
            end, -0.45, f"table Unhealthy at {table:.0f} ms → ", fontsize=8, va="bottom", ha="right"
        )
    ax.set_xlim(start, end)
    ax.set_ylim(-0.6, len(ROWS) - 0.4)
    ax.set_yticks(range(len(ROWS)))
    ax.set_yticklabels(["answered by east", "answered by west", "failed"])
    ax.set_title(
        f"{mode['label']}: {trial['failed']} failed, {trial['carried']} carried", fontsize=10
    )
    ax.set_xlabel("request sent, ms after the kill of east's service")
    ax.grid(axis="x", alpha=0.3)


def main(source, target):
    with open(source) as f:
        modes = json.load(f)["modes"]
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 2.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        panel(ax, mode)
    fig.suptitle("detour failover timeline (500 GET/s, first trial of each mode)", fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_failover.py FAILOVER_JSON OUT_PNG")
    main(sys.argv[1], sys.argv[2])
