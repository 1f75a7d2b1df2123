"""`memrl report`: finished sweeps as the papers' tables and plots (`build.build_report`)."""
