# The arrows of ARCHITECTURE.md, checked on the source tree: a folder includes no header of a folder it
# must not know. Run as a ctest (`include_layering`):
#   cmake -DSOURCE_DIR=<tree> -P include_layering.cmake
# Fails (FATAL_ERROR) with one line per offending include: file, line number and the rule it breaks.
if(NOT DEFINED SOURCE_DIR)
  message(FATAL_ERROR "include_layering: pass -DSOURCE_DIR=<root of the source tree>")
endif()

# folder:folders it must not include from, comma-separated (a header path's leading folders)
set(rules
  "scheduler:worker,kvstore"                  # the scheduler never touches the engine nor KV bytes
  "model:worker,scheduler,kvstore,kernels"    # formats depend on common only
  "kernels:model,worker,scheduler,kvstore"    # kernels know nothing of models
  "common:model,kernels,worker,scheduler,kvstore"
  "kvstore:worker,model"                      # the kvstore never knows what a model is
)

set(violations "")
set(files_checked 0)
foreach(rule IN LISTS rules)
  string(REPLACE ":" ";" parts "${rule}")
  list(GET parts 0 folder)
  list(GET parts 1 forbidden)
  string(REPLACE "," ";" forbidden "${forbidden}")
  if(NOT IS_DIRECTORY "${SOURCE_DIR}/${folder}")
    continue()
  endif()
  file(GLOB_RECURSE sources RELATIVE "${SOURCE_DIR}"
       "${SOURCE_DIR}/${folder}/*.h" "${SOURCE_DIR}/${folder}/*.cc" "${SOURCE_DIR}/${folder}/*.cu"
       "${SOURCE_DIR}/${folder}/*.cuh" "${SOURCE_DIR}/${folder}/*.cpp" "${SOURCE_DIR}/${folder}/*.hpp")
  foreach(source IN LISTS sources)
    math(EXPR files_checked "${files_checked} + 1")
    file(STRINGS "${SOURCE_DIR}/${source}" lines)
    set(line_number 0)
    foreach(line IN LISTS lines)
      math(EXPR line_number "${line_number} + 1")
      if(NOT line MATCHES "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]+)[>\"]")
        continue()
      endif()
      set(header "${CMAKE_MATCH_1}")
      foreach(prefix IN LISTS forbidden)
        if(header MATCHES "^${prefix}/")
          string(APPEND violations
                 "\n  ${source}:${line_number}: includes \"${header}\": ${folder}/ must not include ${prefix}/")
        endif()
      endforeach()
    endforeach()
  endforeach()
endforeach()

if(files_checked EQUAL 0)
  message(FATAL_ERROR "include_layering: no sources found under ${SOURCE_DIR}")
endif()
if(NOT violations STREQUAL "")
  message(FATAL_ERROR "include_layering: headers across the arrows of ARCHITECTURE.md:${violations}")
endif()
message(STATUS "include_layering: ${files_checked} files follow the arrows")
