"""Storage codings of weight arrays. numpy only: nothing here imports torch."""
