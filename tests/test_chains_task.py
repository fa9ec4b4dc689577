"""The ``chains`` task of experiment A1: its format, its grader and its per-step (local) accuracy."""

from mentor.tasks.chains import STEPS, ChainTask, ChainValidationTask, step_accuracy


def test_a_problem_is_sixteen_two_digit_running_sums():
    problem = ChainTask().test_problems(1)[0]
    start, blanks = int(problem.prompt[:2]), problem.prompt[2:].split("=??")[:-1]
    addends = [int(blank[1:]) for blank in blanks]
    assert len(addends) == STEPS == 16 and all(0 <= a <= 5 for a in addends)
    sums = [start + sum(addends[: i + 1]) for i in range(STEPS)]
    assert problem.solution == "".join(f"+{a}={s:02d}" for a, s in zip(addends, sums))
    assert problem.answer == f"{sums[-1]:02d}"


def test_grade_needs_every_step_and_the_right_last_value():
    task = ChainTask()
    problem = task.test_problems(1)[0]
    assert task.grade(problem.solution, problem) == 1.0
    assert task.grade(problem.solution + "<junk>", problem) == 1.0
    steps = problem.solution.split("+")[1:]
    assert task.grade("+" + "+".join(steps[1:]), problem) == 0.0  # a step missing
    wrong_last = problem.solution[:-2] + f"{(int(problem.answer) + 1) % 100:02d}"
    assert task.grade(wrong_last, problem) == 0.0


def test_step_accuracy_judges_each_value_from_the_models_previous_one():
    task = ChainTask()
    problem = task.test_problems(1)[0]
    assert step_accuracy(problem.solution, problem) == 1.0
    assert step_accuracy("", problem) == 0.0
    # one slip early (first value off by one), every later sum right from the slipped value: one step lost
    steps = [s.split("=") for s in problem.solution.split("+")[1:]]
    shifted = "".join(f"+{a}={int(v) + 1:02d}" for a, v in steps)
    assert step_accuracy(shifted, problem) == (STEPS - 1) / STEPS
    assert task.grade(shifted, problem) == 0.0
    # half the chain written: half the steps
    assert step_accuracy("".join(f"+{a}={v}" for a, v in steps[: STEPS // 2]), problem) == 0.5


def test_training_problems_avoid_the_test_and_validation_splits():
    task = ChainTask()
    validation = ChainValidationTask()
    held_out = {p.prompt for p in task.test_problems(2000)} | {p.prompt for p in validation.test_problems(2000)}
    assert not held_out & {p.prompt for p in task.train_problems(500, seed=0)}
    assert {p.prompt for p in task.test_problems(50)}.isdisjoint(p.prompt for p in validation.test_problems(50))
