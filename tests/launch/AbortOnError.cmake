# An exception on any rank ends the whole job with its message (never a hang).
add_executable(abort_on_error_helper ${CMAKE_CURRENT_LIST_DIR}/abort_on_error_helper.cpp)
target_link_libraries(abort_on_error_helper PRIVATE switchyard_lib)
foreach(np 2 4)
  math(EXPR failing "${np} - 1")
  add_test(NAME AbortOnError.np${np}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/abort_on_error_check.sh ${SY_MPIRUN} ${np}
                   $<TARGET_FILE:abort_on_error_helper> ${failing})
  set_tests_properties(AbortOnError.np${np} PROPERTIES LABELS mpi TIMEOUT 120 PROCESSORS ${np})
endforeach()
