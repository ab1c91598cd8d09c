//! EDF Tempo colours (api-couleur-tempo.fr, RTE) and the red-day precharge planner.
