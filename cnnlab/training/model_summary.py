"""The model table printed when training starts, without Lightning's FLOPs column: Lightning counts FLOPs
only for a module with ``example_input_array`` and shows 0 otherwise; results.json has cnnlab's MAC count."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary (one row per top-level module, parameter totals), minus FLOPs."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name if name else " ", justify="left" if name in ("", "Name", "Type", "Mode") else "right")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        trainable, total = get_human_readable_count(trainable_parameters), get_human_readable_count(total_parameters)
        console.print(f"[bold]Params[/]: {trainable} trainable of {total} ({get_formatted_model_size(model_size)} MB)")
