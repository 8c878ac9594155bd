# launch/plot.sh on a synthetic run (20 steps, 2 MoE layers x 4 experts, 2 evals, 2 domains) and its error paths.
# Skipped (exit 77) when gnuplot or jq is not installed.
add_test(NAME PlotCheck COMMAND ${CMAKE_CURRENT_LIST_DIR}/plot_check.sh ${PROJECT_SOURCE_DIR}/launch/plot.sh)
set_tests_properties(PlotCheck PROPERTIES LABELS script TIMEOUT 120 SKIP_RETURN_CODE 77)
