"""The improvement side of learnloop: dataset builders, trainer, learning cycle."""
