"""cnnlab's joblib launcher as a Hydra plugin (Hydra loads launchers from the ``hydra_plugins`` package only);
the code is in :mod:`cnnlab.joblib_sweep`."""
